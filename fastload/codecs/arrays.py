"""Arrays: ``.npy`` files and TIFFs OpenCV cannot read whole (float pixels, several pages or
samples other than gray/RGB(A)), read with NumPy and tifffile. Every channel and the pixel type
are kept; HxW, HxWxC and CxHxW are told apart by ``array_layout``. Headers are read before any
value is loaded, and a pickled ``.npy`` is refused, never loaded.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import BadInputError
from ..pixels import CV_TYPES
from .base import Codec, ImageInfo, Magic, Window, check_pixels, check_window, cut_window

__all__ = ["CODEC", "ARRAY_DTYPES", "MAX_CHANNELS", "CHANNELS_FIRST_MAX", "array_layout",
           "encode_npy", "probe", "decode", "decode_window"]

MAGIC = (Magic("npy", ((0, b"\x93NUMPY"),)),)
# Arrays (.npy, array TIFFs) may also hold float32 pixels in 0..1 (what Normalize assumes), and
# int16 (signed values such as the Hounsfield units of a packed DICOM record); int32/uint32 hold
# 32-bit DICOM values (RT dose, 32-bit secondary captures), whose depth is kept.
ARRAY_DTYPES = ("uint8", "uint16", "int16", "int32", "uint32", "float32")
# An array's channel axis is the last one, with at most MAX_CHANNELS channels, or the first one
# when it has at most CHANNELS_FIRST_MAX entries and is shorter than both others (see array_layout).
MAX_CHANNELS = 64
CHANNELS_FIRST_MAX = 16


def array_layout(shape: tuple[int, ...], path: str = "<array>") -> tuple[int, int, int, bool]:
    """``(height, width, channels, channels_first)`` of an array of ``shape``.

    Leading axes of length 1 are dropped. ``HxW`` is one channel. A 3-D array ``(a, b, c)`` is
    ``CxHxW`` when ``a <= 16`` and ``a`` is smaller than both ``b`` and ``c`` (so a 6x512x512
    stack is 6 channels), otherwise ``HxWxC`` with at most ``MAX_CHANNELS`` channels; any other
    shape raises BadInputError.

    >>> array_layout((6, 40, 48)), array_layout((40, 48, 6)), array_layout((40, 48))
    ((40, 48, 6, True), (40, 48, 6, False), (40, 48, 1, False))
    """
    dims = tuple(int(n) for n in shape)
    while len(dims) > 3 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) == 2:
        return dims[0], dims[1], 1, False
    if len(dims) != 3:
        raise BadInputError(path, f"array of shape {dims}: expected HxW, HxWxC or CxHxW")
    a, b, c = dims
    if a <= CHANNELS_FIRST_MAX and a < min(b, c):
        return b, c, a, True
    if c > MAX_CHANNELS:
        raise BadInputError(path, f"array of shape {dims}: cannot tell which axis holds the channels "
                                  f"(HxWxC with at most {MAX_CHANNELS} channels, or CxHxW with at most "
                                  f"{CHANNELS_FIRST_MAX} channels and C < H, W)")
    return a, b, c, False


def _check_array_dtype(dtype: np.dtype, path: str) -> None:
    if dtype.hasobject:
        raise BadInputError(path, "the .npy holds Python objects (a pickle); fastload never unpickles "
                                  "(loading a pickle can run code): save a numeric array instead")
    if dtype.name not in ARRAY_DTYPES:
        raise BadInputError(path, f"unsupported array dtype {dtype} (expected one of "
                                  f"{', '.join(ARRAY_DTYPES)}; convert it before packing)")


def _to_hwc(array: np.ndarray, path: str, window: Window | None = None, into: np.ndarray | None = None) -> np.ndarray:
    """``array`` (or its ``window``) in the policy's layout: HxWxC, C-contiguous, native byte
    order, writeable; laid out at the start of ``into`` (flat uint8) where it fits.

    Channel planes (CxHxW, as microscopy stacks come) are interleaved by ``cv2.merge``: ~3x faster
    than NumPy's transposing copy (6x512x512 uint16: 330 vs 954 us, one core), which was the
    largest part of reading such a record. With a window, only its part of each plane is read."""
    height, width, channels, first = array_layout(array.shape, path)
    array = array.reshape((channels, height, width) if first else (height, width, channels))
    if window is not None:
        check_window(height, width, window, path)
        top, left, h, w = window
        array = array[:, top : top + h, left : left + w] if first else array[top : top + h, left : left + w]
        height, width = array.shape[1:] if first else array.shape[:2]
    target = _laid_out(into, (height, width, channels), array.dtype.newbyteorder("="))
    if first and 1 < channels <= 512 and array.dtype in CV_TYPES and array.dtype.isnative:
        import cv2  # a core dependency; imported here to keep `import fastload` light

        merged = cv2.merge(list(array), dst=target)
        if target is None or merged.ctypes.data == target.ctypes.data:
            return merged.reshape(height, width, channels)
        array = merged.reshape(height, width, channels)  # OpenCV made its own: copied below
    elif first:
        array = np.moveaxis(array, 0, -1)
    if target is not None:
        np.copyto(target, array)
        return target
    out = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    return out if out.flags.writeable else out.copy()  # a view of the record's bytes: its own copy


def _laid_out(into: np.ndarray | None, shape: tuple[int, int, int], dtype: np.dtype) -> np.ndarray | None:
    """An array of ``shape`` and ``dtype`` at the start of ``into`` (flat uint8), or None where
    there is no ``into``, it is too small, or its start is not aligned for ``dtype``."""
    size = int(np.prod(shape)) * dtype.itemsize
    if into is None or into.size < size or into.ctypes.data % dtype.itemsize:
        return None
    return into[:size].view(dtype).reshape(shape)


def encode_npy(image: np.ndarray) -> bytes:
    """``image`` as a ``.npy`` blob (little-endian, C order, no pickle): the lossless payload
    of samples that have no encoded file of their own, such as stacked channel files."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(image, dtype=image.dtype.newbyteorder("<")), allow_pickle=False)
    return buf.getvalue()


def _npy_header(data: bytes, path: str) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    """Shape, dtype, data offset and whether the values are in Fortran order, from a .npy header,
    without loading (or unpickling) it."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
    except ValueError as exc:
        raise BadInputError(path, f"unreadable .npy header: {exc}") from None
    return tuple(shape), dtype, f.tell(), bool(fortran)


def claims(data: bytes, fmt: str, path: str) -> bool:
    """Every ``.npy``; a TIFF only when OpenCV's image policy cannot read it (``_tiff_array``)."""
    return fmt == "npy" or (fmt == "tiff" and _tiff_array(data, path) is not None)


def probe(data: bytes, fmt: str, path: str, max_pixels: int) -> ImageInfo:
    """The header facts of a .npy or array TIFF, read without loading a value."""
    if fmt == "npy":
        shape, dtype, offset, _ = _npy_header(data, path)
        _check_array_dtype(dtype, path)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(data) - offset < expected:
            raise BadInputError(path, f"truncated .npy: its header promises {expected:,} bytes of "
                                      f"values, the file holds {len(data) - offset:,}")
    else:
        found = _tiff_array(data, path)
        if found is None:
            raise BadInputError(path, "the TIFF is an image, not an array (read it as an image)")
        shape, dtype = found
        _check_array_dtype(dtype, path)
    height, width, channels, first = array_layout(shape, path)
    check_pixels(path, width, height, max_pixels)
    return ImageInfo(fmt, height, width, channels, dtype.name, "CHW" if first else
                     ("HWC" if len(shape) > 2 else "HW"))


def decode(data: bytes, fmt: str, path: str) -> np.ndarray:
    """``HxWxC`` in the array's own pixel type, every channel kept."""
    return _decode_npy(data, path) if fmt == "npy" else _decode_tiff_array(data, path)


def decode_window(data: bytes, fmt: str, path: str, window: Window | None,
                  into: np.ndarray | None = None) -> np.ndarray:
    """``decode``'s ``window`` (None: the whole array): a ``.npy`` lays out only the window's
    values (a random-resized crop of a 6x512x512 uint16 stack: about half the record's
    interleave, see ``_to_hwc``), at the start of ``into`` where it fits (a feed slot: the copy
    after it was ~7% of a 6-channel list's rate); TIFF arrays ignore ``into``."""
    if fmt == "npy":
        return _decode_npy(data, path, window, into)
    array = _decode_tiff_array(data, path)
    return array if window is None else cut_window(array, window, path)


def _decode_npy(data: bytes, path: str, window: Window | None = None, into: np.ndarray | None = None) -> np.ndarray:
    """The values are viewed in place (``np.frombuffer``), not copied out first as ``np.load``
    does: ``_to_hwc`` makes the one copy the layout needs (a 3 MB record: ~1 ms less)."""
    shape, dtype, offset, fortran = _npy_header(data, path)
    _check_array_dtype(dtype, path)  # never an object array: nothing here unpickles
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - offset < count * dtype.itemsize:
        raise BadInputError(path, f"cannot load the .npy: truncated, its header promises {count * dtype.itemsize:,} "
                                  f"bytes of values, the record holds {len(data) - offset:,}")
    array = np.frombuffer(data, dtype, count, offset).reshape(shape, order="F" if fortran else "C")
    return _to_hwc(array, path, window, into)


# TIFF photometric interpretations (TIFF 6.0 tag 262).
_TIFF_MINISBLACK, _TIFF_RGB = 1, 2


def _tiff_array(data: bytes, path: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of a TIFF's first series when it must be read as an array (float
    pixels, 2 or more than 4 samples per pixel, several gray samples, or several non-colour
    pages); None when OpenCV's policy applies (one gray page; RGB(A) pages, of which the first
    is read; palette, CMYK, YCbCr)."""
    import tifffile  # a core dependency; imported here to keep `import fastload` light

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if not tif.series:
                raise BadInputError(path, "the TIFF holds no image")
            series, page = tif.series[0], tif.pages[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            pages, samples = len(series.pages), int(page.samplesperpixel)
            photometric = int(page.photometric) if page.photometric is not None else -1
    except BadInputError:
        raise
    except Exception as exc:  # tifffile raises many types for broken headers
        raise BadInputError(path, f"unreadable TIFF header: {exc}") from None
    if dtype.kind == "f" or samples not in (1, 3, 4):
        return shape, dtype
    if photometric == _TIFF_RGB:  # colour, even over several pages: first page, as GIF
        return None
    if pages > 1 or (photometric == _TIFF_MINISBLACK and samples > 1):
        return shape, dtype
    return None


def _decode_tiff_array(data: bytes, path: str) -> np.ndarray:
    import tifffile

    try:
        array = tifffile.imread(io.BytesIO(data), series=0)
    except Exception as exc:  # codecs raise their own types
        raise BadInputError(path, f"TIFF pixel data cannot be decoded: {exc}") from None
    _check_array_dtype(array.dtype, path)
    return _to_hwc(array, path)


CODEC = Codec("arrays", MAGIC, ("npy", "tiff"), probe, decode, claims=claims, decode_window=decode_window)
