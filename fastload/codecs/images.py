"""Identify, validate and decode encoded images by their content, never their extension.

Decode policy (documented in docs/FORMAT.md and the README):

* Colour images (RGB, YCbCr, CMYK, palette, with or without alpha) decode to 3-channel RGB;
  an alpha channel is dropped.
* Grayscale images (8 or 16 bit, with or without alpha) decode to 1 channel (``HxWx1``).
* 16-bit PNG/TIFF keep their depth (``uint16``); nothing is truncated to 8 bits.
* DICOM follows its own documented policy (``fastload.codecs.dicom``): real (rescaled) values in
  ``uint8``/``uint16``/``int16``/``float32``, MONOCHROME1 inverted, YBR as RGB.
* EXIF orientation is applied, so pixels are upright as a photo viewer shows them.
* GIF and animated WebP: the first frame.
* Arrays (``.npy`` files, and TIFFs with several pages, channels other than gray/RGB(A), or
  float pixels) keep every channel and their pixel type (uint8, uint16, int16, float32; float
  values are taken as 0..1, except DICOM real values). HxW, HxWxC and CxHxW are told apart by ``array_layout``.

Decoding uses OpenCV (libjpeg-turbo, libpng, libtiff, libwebp); headers are read with Pillow
before any pixel buffer is allocated, so a header that claims 50000x50000 pixels is refused
without touching memory (``.npy`` and array TIFF headers are read with NumPy and tifffile).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..errors import BadInputError
from . import dicom, jpeg2000

__all__ = ["ImageInfo", "DEFAULT_MAX_PIXELS", "MAX_CHANNELS", "array_layout", "encode_npy",
           "sniff_format", "probe", "decode", "validate"]

# Pillow refuses headers above twice its MAX_IMAGE_PIXELS; we use the same bound by default.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"BM", 0, "bmp"),
    (b"\x93NUMPY", 0, "npy"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "jpeg2000"),  # JP2 file
    (b"\xff\x4f\xff\x51", 0, "jpeg2000"),  # bare codestream (SOC, SIZ)
)
_DECODE_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
_SUPPORTED_DTYPES = (np.uint8, np.uint16)
# Arrays (.npy, array TIFFs) may also hold float32 pixels in 0..1 (what Normalize assumes), and
# int16 (signed values such as the Hounsfield units of a packed DICOM record); int32/uint32 hold
# 32-bit DICOM values (RT dose, 32-bit secondary captures), whose depth is kept.
ARRAY_DTYPES = ("uint8", "uint16", "int16", "int32", "uint32", "float32")
# An array's channel axis is the last one, with at most MAX_CHANNELS channels, or the first one
# when it has at most CHANNELS_FIRST_MAX entries and is shorter than both others (see array_layout).
MAX_CHANNELS = 64
CHANNELS_FIRST_MAX = 16
# Where the header says whether an image is gray (JPEG, PNG), OpenCV is asked for the policy's
# result directly: gray as 1 channel (OpenCV would expand gray+alpha PNGs to colour), colour
# decoded straight into RGB (no BGR->RGB pass afterwards, a quarter of a JPEG decode's time).
_GRAY_FLAGS = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH
_RGB_FLAGS = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY_TYPES = (0, 4)  # IHDR colour types: gray, gray+alpha
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry Nf.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG's start-of-frame header, or None if not found."""
    i, n = 2, len(data)
    while i + 9 < n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:  # FF Cx, length(2), precision(1), height(2), width(2), Nf
            return (int.from_bytes(data[i + 5 : i + 7], "big"),
                    int.from_bytes(data[i + 7 : i + 9], "big"), data[i + 9])
        if marker == 0xDA:  # start of scan before any frame header: broken
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


# Pillow's names for what the headers say (ImageInfo.mode).
_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
_PNG_MODES = {(0, 1): "1", (0, 16): "I;16", 0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


def _read_size(data: bytes, fmt: str) -> tuple[int, int, str] | None:
    """(width, height, mode) of a JPEG or PNG from its header, without Pillow (which also
    refuses anything above its own pixel limit, whatever ``max_pixels`` says); else None."""
    if fmt == "png" and data[12:16] == b"IHDR" and len(data) >= 26:
        depth, colour = data[24], data[25]
        mode = _PNG_MODES.get((colour, depth), _PNG_MODES.get(colour))
        return (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"),
                mode) if mode else None
    if fmt == "jpeg":
        frame = _jpeg_frame(data)
        if frame and frame[0] > 0 and frame[2] in _JPEG_MODES:  # height 0: given later (DNL)
            return frame[1], frame[0], _JPEG_MODES[frame[2]]
    return None


def _header_flags(data: bytes, fmt: str | None) -> int | None:
    """OpenCV flags that give the policy's layout directly, or None to convert afterwards."""
    if fmt == "png" and data[12:16] == b"IHDR":
        gray = data[25] in _PNG_GRAY_TYPES
    elif fmt == "jpeg":
        frame = _jpeg_frame(data)
        if frame is None:
            return None
        gray = frame[2] == 1
    else:
        return None
    if gray:
        return _GRAY_FLAGS
    return None if _RGB_FLAGS is None else _RGB_FLAGS | cv2.IMREAD_ANYDEPTH


@dataclass(frozen=True)
class ImageInfo:
    """What the header and the decode of one image say about it."""

    format: str  # "jpeg", "png", "gif", "tiff", "bmp", "webp", "dicom", "npy"
    height: int
    width: int
    channels: int  # after the decode policy: 1 or 3 for images, any count for arrays
    dtype: str  # "uint8" or "uint16" ("float32" for arrays)
    # The source's colour mode as Pillow names it ("RGB", "CMYK", "P", "I;16", ...); for arrays
    # the layout the array was read in ("HW", "HWC" or "CHW").
    mode: str


def sniff_format(data: bytes) -> str | None:
    """Return the image format named by the leading magic bytes, or None.

    ``DICM`` at offset 128 comes first: a DICOM file's 128-byte preamble may hold a TIFF (or
    other) header, as dual-personality files do. Preamble-less DICOM is tried last.
    """
    if data[128:132] == b"DICM":
        return "dicom"
    for magic, offset, name in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if dicom.is_dicom(data):
        return "dicom"
    return None


def _describe_non_image(data: bytes) -> str:
    if not data:
        return "empty file (0 bytes)"
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "not an image: the file holds HTML/XML text"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in data[:256]):
        return "not an image: the file holds plain text"
    return f"not a recognised image format (first bytes {data[:8].hex(' ')})"


def probe(data: bytes, path: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read the header only: format, size and mode. Raises BadInputError.

    The pixel count is checked here, before any decode allocates a buffer.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise BadInputError(path, _describe_non_image(data))
    if fmt == "dicom":
        return dicom.probe(data, path, max_pixels)
    if fmt == "jpeg2000":
        return _probe_jpeg2000(data, path, max_pixels)
    array = _probe_array(data, path, fmt, max_pixels)
    if array is not None:
        return array
    width, height, mode = _read_size(data, fmt) or _read_size_pillow(data, path, fmt)
    _check_pixels(path, width, height, max_pixels)
    channels = 1 if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3
    dtype = "uint16" if mode.startswith("I") else "uint8"
    return ImageInfo(fmt, height, width, channels, dtype, mode)


def _read_size_pillow(data: bytes, path: str, fmt: str) -> tuple[int, int, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size[0], im.size[1], im.mode
    except Image.DecompressionBombError as exc:
        raise BadInputError(path, f"refused before decoding: {exc}") from None
    except Exception as exc:  # Pillow raises many types for broken headers
        raise BadInputError(path, f"unreadable {fmt} header: {exc}") from None


def _check_pixels(path: str, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise BadInputError(path, f"header claims an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise BadInputError(
            path,
            f"header claims {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,}; raise max_pixels (--max-pixels) if this is intended",
        )


def decode(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """Decode encoded bytes to an ``HxWxC`` array by the policy: C = 1 or 3, uint8 or uint16
    for images; every channel, uint8, uint16 or float32 for arrays (.npy, array TIFFs)."""
    fmt = sniff_format(data)
    if fmt == "dicom":
        return dicom.decode(data, path)
    if fmt == "jpeg2000":
        return jpeg2000.decode(data, path)
    if fmt == "npy":
        return _decode_npy(data, path)
    if fmt == "tiff" and _tiff_array(data, path) is not None:
        return _decode_tiff_array(data, path)
    buf = np.frombuffer(data, dtype=np.uint8)
    flags = _header_flags(data, fmt)
    try:
        image = cv2.imdecode(buf, _DECODE_FLAGS if flags is None else flags)
    except cv2.error as exc:
        raise BadInputError(path, f"decoder error: {exc}") from None
    if image is None:
        raise BadInputError(path, "cannot be decoded (truncated or corrupt image data)")
    if flags is not None:  # already gray or RGB
        if image.dtype not in _SUPPORTED_DTYPES:
            raise BadInputError(path, f"unsupported pixel type {image.dtype} (expected 8 or 16 bit)")
        return image[:, :, None] if image.ndim == 2 else image
    return _to_policy(image, path)


def _to_policy(image: np.ndarray, path: str) -> np.ndarray:
    if image.dtype not in _SUPPORTED_DTYPES:
        raise BadInputError(path, f"unsupported pixel type {image.dtype} (expected 8 or 16 bit)")
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def validate(
    data: bytes, path: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[ImageInfo, np.ndarray]:
    """Probe the header, then decode fully; return the info and the decoded pixels.

    Raises BadInputError with a reason a user can act on.
    """
    info = probe(data, path, max_pixels)
    image = decode(data, path)
    h, w, c = image.shape
    if (h, w) != (info.height, info.width) and (w, h) != (info.height, info.width):
        raise BadInputError(path, f"header says {info.width}x{info.height}, pixels are {w}x{h}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise BadInputError(path, "float pixels include NaN or infinity")
    return ImageInfo(info.format, h, w, c, str(image.dtype), info.mode), image


# --- JPEG 2000 (DICOM codestreams kept for GPU decoding, and .jp2/.j2k files) -------------


def _probe_jpeg2000(data: bytes, path: str, max_pixels: int) -> ImageInfo:
    height, width, components, bits, _ = jpeg2000.probe_size(data, path)
    _check_pixels(path, width, height, max_pixels)
    channels = 1 if components <= 2 else 3
    return ImageInfo("jpeg2000", height, width, channels, "uint8" if bits <= 8 else "uint16",
                     "L" if channels == 1 else "RGB")


# --- arrays: .npy files and TIFFs OpenCV cannot read whole --------------------------------


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


def _to_hwc(array: np.ndarray, path: str) -> np.ndarray:
    """``array`` in the policy's layout: HxWxC, C-contiguous, native byte order."""
    height, width, channels, first = array_layout(array.shape, path)
    array = array.reshape((channels, height, width) if first else (height, width, channels))
    if first:
        array = np.moveaxis(array, 0, -1)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


def encode_npy(image: np.ndarray) -> bytes:
    """``image`` as a ``.npy`` blob (little-endian, C order, no pickle): the lossless payload
    of samples that have no encoded file of their own, such as stacked channel files."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(image, dtype=image.dtype.newbyteorder("<")), allow_pickle=False)
    return buf.getvalue()


def _npy_header(data: bytes, path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset from a .npy header, without loading (or unpickling) it."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
    except ValueError as exc:
        raise BadInputError(path, f"unreadable .npy header: {exc}") from None
    return tuple(shape), dtype, f.tell()


def _probe_array(data: bytes, path: str, fmt: str, max_pixels: int) -> ImageInfo | None:
    """The header facts of a .npy or array TIFF (None for any other input)."""
    if fmt == "npy":
        shape, dtype, offset = _npy_header(data, path)
        _check_array_dtype(dtype, path)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(data) - offset < expected:
            raise BadInputError(path, f"truncated .npy: its header promises {expected:,} bytes of "
                                      f"values, the file holds {len(data) - offset:,}")
    elif fmt == "tiff":
        found = _tiff_array(data, path)
        if found is None:
            return None
        shape, dtype = found
        _check_array_dtype(dtype, path)
    else:
        return None
    height, width, channels, first = array_layout(shape, path)
    _check_pixels(path, width, height, max_pixels)
    return ImageInfo(fmt, height, width, channels, dtype.name, "CHW" if first else
                     ("HWC" if len(shape) > 2 else "HW"))


def _decode_npy(data: bytes, path: str) -> np.ndarray:
    _, dtype, _ = _npy_header(data, path)
    _check_array_dtype(dtype, path)  # before np.load sees it (which would refuse it, too)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadInputError(path, f"cannot load the .npy: {exc}") from None
    return _to_hwc(array, path)


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
