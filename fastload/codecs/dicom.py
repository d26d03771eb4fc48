"""DICOM: identify a file, read its frames, and turn them into pixels by a documented policy.

The policy (README "DICOM", docs/FORMAT.md) is applied while packing and recorded per record:

* **Frames**: the first frame (``frames="first"``, default) or one record per frame
  (``frames="all"``); a file of any frame count packs, never crashes.
* **Colour**: YBR (``YBR_FULL``, ``YBR_FULL_422``, ``YBR_ICT``, ``YBR_RCT``, ...) becomes RGB,
  as pydicom's ``pixel_array`` gives it; ``PALETTE COLOR`` is looked up into RGB.
* **Modality values**: grayscale pixels become real values (Rescale Slope/Intercept, e.g.
  Hounsfield units, or the Modality LUT), stored without loss in the smallest type that holds
  the range the header allows: ``uint8``/``uint16`` when no rescale makes values negative,
  ``int16`` for CT-style integer rescales, ``float32`` for fractional slopes (exact for the
  stored integers, which have at most 16 bits). Bit depth is kept; nothing is cast silently:
  a value that does not fit is an error naming the file.
* **MONOCHROME1** (bright = low) is inverted within that range (``lo + hi - v``), so every
  record reads bright = high; the recorded window centre is inverted with it.
* **Windowing** (VOI): by default not applied; the file's first window (centre, width,
  function) is recorded per record for a windowing op in the loader. ``window="file"`` applies
  the file's own VOI (its VOI LUT, else its first window, else the image's min..max: what a
  viewer shows first); ``window=(center, width)`` applies that window (e.g. ``(40, 400)``
  for soft tissue, ``(-600, 1500)`` for lung). Windowed records are ``uint8`` 0..255, the
  display range, by the DICOM formula (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID).

pydicom reads the files; its pixel-data plugins (the ``dicom`` extra) decode the compressed
transfer syntaxes.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import BadInputError, MissingExtraError

__all__ = ["DicomOptions", "DicomFrame", "PixelPolicy", "is_dicom", "probe", "read_frames", "decode",
           "WINDOW_FUNCTIONS", "FRAMES", "DICOM_PAYLOADS"]

FRAMES = ("first", "all")
DICOM_PAYLOADS = ("pixels", "codestream")
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_PREFIX_OFFSET = 128
# Transfer syntaxes whose frames are JPEG 2000 codestreams (kept as they are with payload="codestream").
JPEG2000_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless only
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
})
_EXPLICIT_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV".split())
_EXACT_FLOAT32 = 2**24  # float32 holds every integer up to this


@dataclass(frozen=True)
class DicomOptions:
    """How DICOM files are packed. Checked at construction.

    Attributes:
        frames: "first" (one record per file, its first frame) or "all" (one record per frame).
        window: None (keep modality values; record the file's window as metadata), "file"
            (apply the file's own VOI LUT or first window, else the image's min..max), or a
            ``(center, width)`` pair applied to every file. Windowed records are uint8.
        payload: "pixels" (the policy's result, stored losslessly: 16-bit PNG or .npy) or
            "codestream" (JPEG 2000 files: the frame's encapsulated codestream, unchanged, in a
            JP2 box with the policy beside it, for GPU decoding; other files as "pixels").

    >>> DicomOptions(window=(40, 400)).window
    (40.0, 400.0)
    """

    frames: str = "first"
    window: str | tuple[float, float] | None = None
    payload: str = "pixels"

    def __post_init__(self) -> None:
        if self.frames not in FRAMES:
            raise ValueError(f"dicom frames must be one of {FRAMES}, got {self.frames!r}")
        if self.payload not in DICOM_PAYLOADS:
            raise ValueError(f"dicom payload must be one of {DICOM_PAYLOADS}, got {self.payload!r}")
        window = self.window
        if window is None or window == "file":
            return
        if isinstance(window, str) or len(window) != 2:
            raise ValueError(f"dicom window must be None, 'file' or (center, width), got {window!r}")
        center, width = float(window[0]), float(window[1])
        if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
            raise ValueError(f"dicom window width must be a finite number >= 1, got {window!r}")
        object.__setattr__(self, "window", (center, width))


@dataclass(frozen=True)
class PixelPolicy:
    """The grayscale policy for one frame: stored values -> real values -> (window) -> output.

    Serialised as JSON beside a kept JPEG 2000 codestream, so a reader (CPU here, a GPU
    pipeline elsewhere) turns the decoded stored values into exactly the packed pixels.
    """

    dtype: str  # output dtype: uint8, uint16, int16, float32
    slope: float = 1.0
    intercept: float = 0.0
    invert: bool = False  # MONOCHROME1: lo + hi - v (before windowing: 255 - y after it)
    lo: float = 0.0  # the real-value range the header allows (for the inversion)
    hi: float = 0.0
    window: tuple[float, float, str] | None = None  # applied (center, width, function)

    @property
    def rescaled(self) -> bool:
        return (self.slope, self.intercept) != (1.0, 0.0)

    def apply(self, stored: np.ndarray, path: str) -> np.ndarray:
        """``stored`` (HxW, as decoded) after the policy, as ``HxWx1`` of its output type."""
        floating = self.dtype == "float32"
        if floating:
            values = stored.astype(np.float64) * self.slope + self.intercept
        elif self.rescaled:
            values = stored.astype(np.int64) * int(self.slope) + int(self.intercept)
        else:
            values = stored
        if self.window is not None:
            out = _window(values, *self.window)
            return (255 - out if self.invert else out)[:, :, None]
        if self.invert:
            values = ((self.lo + self.hi) - values if floating
                      else int(self.lo + self.hi) - values.astype(np.int64))
        return _exact_cast(values, self.dtype, path)[:, :, None]

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "slope": self.slope, "intercept": self.intercept,
                "invert": self.invert, "lo": self.lo, "hi": self.hi,
                "window": list(self.window) if self.window else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PixelPolicy:
        window = data.get("window")
        return cls(str(data["dtype"]), float(data["slope"]), float(data["intercept"]),
                   bool(data["invert"]), float(data["lo"]), float(data["hi"]),
                   (float(window[0]), float(window[1]), str(window[2])) if window else None)


@dataclass
class DicomFrame:
    """One packed record's worth of a DICOM file: the policy's pixels and what to record."""

    image: np.ndarray  # HxWxC after the policy
    meta: dict[str, Any]  # per-record metadata (JSON-safe)
    codestream: bytes | None = None  # the frame's JPEG 2000 codestream, when it is to be kept
    policy: PixelPolicy | None = None  # the grayscale policy, for a kept codestream


# --- reading -------------------------------------------------------------------------------


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise MissingExtraError("pydicom", "dicom", "Reading DICOM files") from None
    return pydicom


def is_dicom(data: bytes) -> bool:
    """``DICM`` at offset 128 (checked before any other signature: the 128-byte preamble may
    hold a TIFF header, as dual-personality files do), or a preamble-less DICOM data set that
    starts with a group 0002 or 0008 element in little-endian byte order."""
    if data[_PREFIX_OFFSET : _PREFIX_OFFSET + 4] == b"DICM":
        return True
    return _preambleless(data)


def _preambleless(data: bytes) -> bool:
    if len(data) < 12:
        return False
    if data[0:2] in (b"\x00\x02", b"\x00\x08") and data[2] == 0:  # explicit VR big endian
        return data[4:6] in _EXPLICIT_VRS
    if data[0:2] not in (b"\x02\x00", b"\x08\x00") or data[3] != 0:
        return False
    if data[4:6] in _EXPLICIT_VRS:  # explicit VR little endian
        return True
    length = int.from_bytes(data[4:8], "little")  # implicit VR: a plausible value length
    return length < min(len(data), 1 << 16)


def read(data: bytes, path: str, stop_before_pixels: bool):
    """The pydicom Dataset of ``data`` (preamble-less files too). Raises BadInputError."""
    pydicom = _pydicom()
    force = data[_PREFIX_OFFSET : _PREFIX_OFFSET + 4] != b"DICM"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels,
                                 force=force)
    except Exception as exc:  # pydicom raises many types for broken files
        raise BadInputError(path, f"unreadable DICOM: {type(exc).__name__}: {exc}") from None
    _infer_transfer_syntax(ds)
    return ds


def _infer_transfer_syntax(ds: Any) -> None:
    """A file without (0002,0010) Transfer Syntax UID (no file meta, as preamble-less files
    often are) whose pixel data is native: the syntax it was read in, as pydicom found it."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    encapsulated = "PixelData" in ds and ds["PixelData"].is_undefined_length
    if implicit is None or little is None or encapsulated:
        return  # encapsulated (compressed) pixel data: its codec cannot be guessed
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                              ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _int(ds: Any, name: str, default: int) -> int:
    value = ds.get(name, default)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        return default


def _geometry(ds: Any, path: str, max_pixels: int, pixels_read: bool = True) -> tuple[int, int, int, int]:
    """(rows, columns, samples per pixel, frames), checked before any pixel is decoded."""
    if pixels_read and not any(name in ds for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise BadInputError(path, "the DICOM file holds no pixel data (not an image: a report, "
                                  "structure set, or other non-image object)")
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if rows <= 0 or cols <= 0:
        raise BadInputError(path, f"DICOM header claims an empty image ({cols}x{rows})")
    if rows * cols > max_pixels:
        raise BadInputError(path, f"DICOM header claims {cols}x{rows} = {rows * cols:,} pixels, "
                                  f"more than the limit of {max_pixels:,}; raise max_pixels "
                                  "(--max-pixels) if this is intended")
    return rows, cols, _int(ds, "SamplesPerPixel", 1), max(1, _int(ds, "NumberOfFrames", 1))


def probe(data: bytes, path: str, max_pixels: int):
    """Header facts of a DICOM file as an ``images.ImageInfo`` (dtype: the stored type)."""
    from .images import ImageInfo

    ds = read(data, path, stop_before_pixels=True)
    rows, cols, samples, _ = _geometry(ds, path, max_pixels, pixels_read=False)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    channels = 3 if samples == 3 or photometric == "PALETTE COLOR" else 1
    bits = _int(ds, "BitsAllocated", 8)
    dtype = "uint8" if bits <= 8 else ("int16" if _int(ds, "PixelRepresentation", 0) else "uint16")
    return ImageInfo("dicom", rows, cols, channels, dtype, photometric)


def decode(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """The first frame of a DICOM file by the default policy (what ``images.decode`` gives)."""
    # No pixel limit here: packing checked it; a reader decodes what was packed.
    return read_frames(data, path, DicomOptions(), max_pixels=1 << 62)[0].image


# --- the policy ------------------------------------------------------------------------------


def read_frames(data: bytes, path: str, options: DicomOptions, max_pixels: int) -> list[DicomFrame]:
    """Decode the frames ``options`` asks for and apply the policy. Raises BadInputError."""
    ds = read(data, path, stop_before_pixels=False)
    rows, cols, samples, count = _geometry(ds, path, max_pixels)
    indices = [0] if options.frames == "first" else list(range(count))
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    keep_codestream = (options.payload == "codestream" and syntax in JPEG2000_SYNTAXES and samples == 1)
    codestreams = _codestreams(ds, count, path) if keep_codestream else None
    frames = []
    for index, stored in zip(indices, _decoded_frames(ds, indices, path)):
        frame = _convert(ds, stored, index, count, options, path)
        frame.meta["transfer_syntax"] = syntax
        if codestreams is not None and frame.policy is not None:
            frame.codestream = codestreams[index]
        frames.append(frame)
    if frames and frames[0].image.shape[:2] != (rows, cols):
        raise BadInputError(path, f"DICOM header says {cols}x{rows}, pixels are "
                                  f"{frames[0].image.shape[1]}x{frames[0].image.shape[0]}")
    return frames


def _decoded_frames(ds: Any, indices: list[int], path: str):
    from pydicom.pixels import iter_pixels

    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    done = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for array in iter_pixels(ds, indices=indices):
                yield np.asarray(array)
                done += 1
    except Exception as exc:  # the decoding plugins raise many types
        if syntax in _LIBJPEG_TURBO_SYNTAXES and done == 0 and _imagecodecs() is not None:
            yield from _libjpeg_turbo_frames(ds, indices, path)  # e.g. 12-bit JPEG Extended
            return
        name = getattr(getattr(ds.file_meta, "TransferSyntaxUID", None), "name", None) if hasattr(
            ds, "file_meta") else None
        raise BadInputError(path, f"DICOM pixel data ({name or syntax or 'no transfer syntax'}) "
                                  f"cannot be decoded: {type(exc).__name__}: {exc}") from None


# JPEG processes that libjpeg-turbo 3 decodes (through imagecodecs) where pydicom's permissive
# plugins cannot: 12-bit JPEG Extended above all (pydicom has only GPL libjpeg for it).
_LIBJPEG_TURBO_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",  # baseline, extended (12-bit)
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",  # lossless (Process 14, SV1)
})


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs


def _libjpeg_turbo_frames(ds: Any, indices: list[int], path: str):
    """Frames of a JPEG-compressed data set decoded by libjpeg-turbo, as pydicom would give
    them: RGB for colour, signed values read from Pixel Representation."""
    imagecodecs = _imagecodecs()
    count = max(1, _int(ds, "NumberOfFrames", 1))
    codestreams = _codestreams(ds, count, path)
    signed = _int(ds, "PixelRepresentation", 0) == 1
    bits = _int(ds, "BitsStored", 16)
    for index in indices:
        try:
            array = np.asarray(imagecodecs.jpeg8_decode(codestreams[index]))
        except Exception as exc:
            raise BadInputError(path, f"DICOM JPEG frame {index} cannot be decoded: {exc}") from None
        if signed and array.ndim == 2:
            values = array.astype(np.int32)
            values[values >= (1 << (bits - 1))] -= 1 << bits
            array = values.astype(np.int16 if bits <= 16 else np.int32)
        yield array


def _codestreams(ds: Any, count: int, path: str) -> list[bytes]:
    from pydicom.encaps import generate_frames

    try:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    except Exception as exc:
        raise BadInputError(path, f"the encapsulated JPEG 2000 frames cannot be split: {exc}") from None


def _convert(ds: Any, stored: np.ndarray, index: int, count: int, options: DicomOptions,
             path: str) -> DicomFrame:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    meta: dict[str, Any] = {"source": "dicom", "frame": index, "frames": count,
                            "photometric": photometric, "modality": str(ds.get("Modality", "") or ""),
                            "bits_stored": _int(ds, "BitsStored", stored.dtype.itemsize * 8),
                            "signed": _int(ds, "PixelRepresentation", 0) == 1}
    spacing = _pixel_spacing(ds, index)
    if spacing:
        meta["pixel_spacing"] = spacing
    if stored.ndim == 3:  # colour: pydicom already turned YBR into RGB
        if stored.shape[2] != 3:
            raise BadInputError(path, f"DICOM frame of {stored.shape[2]} samples per pixel "
                                      "(expected 1 or 3)")
        meta["color"] = "RGB"
        return DicomFrame(_integer_pixels(stored, path), meta)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        meta["color"] = "RGB (palette looked up)"
        return DicomFrame(_integer_pixels(np.asarray(apply_color_lut(stored, ds)), path), meta)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise BadInputError(path, f"DICOM photometric interpretation {photometric!r} with one "
                                  "sample per pixel is not supported (expected MONOCHROME1/2 or "
                                  "PALETTE COLOR)")
    return _grayscale(ds, stored, index, options, meta, path)


def _integer_pixels(image: np.ndarray, path: str) -> np.ndarray:
    if image.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(image)
    if image.dtype.kind in "ui" and image.size and 0 <= image.min() and image.max() <= 65535:
        return image.astype(np.uint16)  # exact: every value fits
    if image.dtype.kind == "u" and image.dtype.itemsize == 4:
        return image.astype(np.uint32)  # 32-bit colour keeps its 32 bits (native byte order)
    raise BadInputError(path, f"DICOM colour pixels of type {image.dtype} are not supported")


def _grayscale(ds: Any, stored: np.ndarray, index: int, options: DicomOptions,
               meta: dict[str, Any], path: str) -> DicomFrame:
    attrs = _frame_attributes(ds, index)
    invert = meta["photometric"] == "MONOCHROME1"
    if stored.dtype.kind == "f":  # Float Pixel Data: real values already
        values = stored.astype(np.float32)
        if not np.array_equal(values, stored, equal_nan=True):
            raise BadInputError(path, "DICOM double-float pixels cannot be kept exactly in float32")
        lo = hi = 0.0
        if values.size:
            lo, hi = float(values.min()), float(values.max())
        policy = PixelPolicy("float32", invert=invert, lo=lo, hi=hi)
    elif ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        stored = np.asarray(apply_modality_lut(stored, ds))  # a LUT: uint8/uint16 by its depth
        meta["modality_lut"] = True
        policy = PixelPolicy(stored.dtype.name, invert=invert, lo=0.0,
                             hi=float(np.iinfo(stored.dtype).max))
    else:
        lo, hi = _stored_range(ds, stored)
        slope, intercept = attrs["slope"], attrs["intercept"]
        meta.update(rescale_slope=slope, rescale_intercept=intercept)
        if attrs.get("rescale_type"):
            meta["rescale_type"] = attrs["rescale_type"]
        policy = _plan(stored, lo, hi, slope, intercept, invert, path)
    meta["inverted"] = invert
    window = _choose_window(ds, attrs, options, stored, policy, path)
    if window == "voi-lut":  # the file's VOI LUT: not expressible as a codestream policy
        meta.update(window_applied="VOI LUT", dtype="uint8")
        return DicomFrame(_apply_voi_lut(ds, stored, policy, path), meta)
    if window is not None:
        policy = replace(policy, window=window)
        meta["window_applied"] = list(window)
    elif attrs["windows"]:  # recorded for a windowing op in the loader
        center, width = attrs["windows"][0]
        meta.update(window_center=policy.lo + policy.hi - center if invert else center,
                    window_width=width, window_function=attrs["function"])
    if attrs["voi_lut"]:
        meta["voi_lut"] = True
    meta["dtype"] = "uint8" if window is not None else policy.dtype
    lut = bool(ds.get("ModalityLUTSequence"))
    return DicomFrame(policy.apply(stored, path), meta, policy=None if lut else policy)


def _stored_range(ds: Any, stored: np.ndarray) -> tuple[int, int]:
    """The stored values the header allows (Bits Stored, Pixel Representation)."""
    bits = _int(ds, "BitsStored", stored.dtype.itemsize * 8)
    bits = min(max(bits, 1), stored.dtype.itemsize * 8)
    if stored.dtype.kind == "i":
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _plan(stored: np.ndarray, lo: int, hi: int, slope: float, intercept: float, invert: bool,
          path: str) -> PixelPolicy:
    """The output type for real values ``stored * slope + intercept``: chosen from the range
    the header allows (so a series shares one type), else from this frame's own values."""
    integer = float(slope).is_integer() and float(intercept).is_integer()
    nominal = sorted((lo * slope + intercept, hi * slope + intercept))
    if not integer:
        if max(abs(lo), abs(hi)) > _EXACT_FLOAT32:
            raise BadInputError(path, "stored values beyond 2**24 with a fractional rescale "
                                      "cannot be kept exactly in float32")
        return PixelPolicy("float32", slope, intercept, invert, nominal[0], nominal[1])
    for low, high in (nominal, _actual_range(stored, slope, intercept)):
        dtype = _integer_type(low, high, stored.dtype)
        if dtype is not None:
            return PixelPolicy(dtype, float(slope), float(intercept), invert, low, high)
    low, high = _actual_range(stored, slope, intercept)
    if max(abs(low), abs(high)) <= _EXACT_FLOAT32:
        return PixelPolicy("float32", float(slope), float(intercept), invert, low, high)
    raise BadInputError(path, f"DICOM values {low:g}..{high:g} (after the rescale) fit none of "
                              "uint16, int16 or float32 exactly")


def _actual_range(stored: np.ndarray, slope: float, intercept: float) -> list[float]:
    if not stored.size:
        return [0.0, 0.0]
    low, high = float(stored.min()) * slope + intercept, float(stored.max()) * slope + intercept
    return sorted((low, high))


def _integer_type(low: float, high: float, stored: np.dtype) -> str | None:
    if low >= 0 and high <= 255 and stored == np.uint8:
        return "uint8"
    if low >= 0 and high <= 65535:
        return "uint16"
    if -32768 <= low and high <= 32767:
        return "int16"
    if stored.itemsize == 4 and low >= 0 and high <= 2**32 - 1:  # 32-bit data keeps 32 bits
        return "uint32"
    if stored.itemsize == 4 and -(2**31) <= low and high <= 2**31 - 1:
        return "int32"
    return None


def _exact_cast(values: np.ndarray, dtype: str, path: str) -> np.ndarray:
    """``values`` as ``dtype``, or BadInputError when any value would change."""
    if values.dtype == dtype:
        return np.ascontiguousarray(values)
    target = np.dtype(dtype)
    if target.kind == "f":  # real values from a fractional rescale: float32's nearest
        out = values.astype(target)
        if not np.isfinite(out).all():
            raise BadInputError(path, "DICOM pixels include NaN or infinity (or overflow float32)")
        return out
    info = np.iinfo(target)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise BadInputError(path, f"DICOM values {values.min()}..{values.max()} do not fit {dtype} "
                                  "(the header's Bits Stored or rescale is wrong)")
    return values.astype(target)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 VOI windowing onto 0..255 (uint8)."""
    x = values.astype(np.float64)
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif function == "LINEAR_EXACT":
        y = np.clip((x - center) / width + 0.5, 0.0, 1.0)
    elif width <= 1:  # LINEAR with width 1: a threshold
        y = (x > center - 0.5).astype(np.float64)
    else:
        y = np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    return np.rint(y * 255.0).astype(np.uint8)


def _choose_window(ds: Any, attrs: dict[str, Any], options: DicomOptions, stored: np.ndarray,
                   policy: PixelPolicy, path: str) -> tuple[float, float, str] | str | None:
    if options.window is None:
        return None
    if options.window != "file":
        center, width = options.window
        return center, width, "LINEAR"
    if attrs.get("voi_lut"):
        return "voi-lut"
    if attrs["windows"]:
        center, width = attrs["windows"][0]
        return center, width, attrs["function"]
    real = PixelPolicy(policy.dtype, policy.slope, policy.intercept).apply(stored, path)
    low, high = (float(real.min()), float(real.max())) if real.size else (0.0, 1.0)
    return (low + high) / 2, max(high - low, 1.0), "LINEAR_EXACT"  # min..max: a viewer's default


def _apply_voi_lut(ds: Any, stored: np.ndarray, policy: PixelPolicy, path: str) -> np.ndarray:
    from pydicom.pixels import apply_voi_lut

    real = PixelPolicy(policy.dtype, policy.slope, policy.intercept).apply(stored, path)[:, :, 0]
    item = ds.VOILUTSequence[0]
    depth = int(item.LUTDescriptor[2]) or 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = np.asarray(apply_voi_lut(real, ds, index=0, prefer_lut=True), dtype=np.float64)
    top = float((1 << depth) - 1)
    y = np.rint(np.clip(out / top, 0.0, 1.0) * 255.0).astype(np.uint8)
    return (255 - y if policy.invert else y)[:, :, None]


def _frame_attributes(ds: Any, index: int) -> dict[str, Any]:
    """Rescale and VOI of frame ``index``: its per-frame functional groups (enhanced
    multi-frame objects), else the shared groups, else the top-level attributes."""
    groups = [g for g in (_group(ds, "PerFrameFunctionalGroupsSequence", index),
                          _group(ds, "SharedFunctionalGroupsSequence", 0)) if g is not None] + [ds]
    attrs: dict[str, Any] = {"slope": 1.0, "intercept": 0.0, "windows": [], "function": "LINEAR"}
    for item in reversed(groups):  # the most specific source wins
        transform = _first(item, "PixelValueTransformationSequence") or item
        if "RescaleSlope" in transform or "RescaleIntercept" in transform:
            attrs["slope"] = _number(transform.get("RescaleSlope"), 1.0) or 1.0
            attrs["intercept"] = _number(transform.get("RescaleIntercept"), 0.0)
            if transform.get("RescaleType"):
                attrs["rescale_type"] = str(transform.RescaleType)
        voi = _first(item, "FrameVOILUTSequence") or item
        windows = _windows(voi)
        if windows:
            attrs["windows"] = windows
            function = str(voi.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
            attrs["function"] = function if function in WINDOW_FUNCTIONS else "LINEAR"
    attrs["voi_lut"] = bool(ds.get("VOILUTSequence"))
    return attrs


def _group(ds: Any, name: str, index: int) -> Any:
    sequence = ds.get(name)
    return sequence[index] if sequence and index < len(sequence) else None


def _first(item: Any, name: str) -> Any:
    sequence = item.get(name) if hasattr(item, "get") else None
    return sequence[0] if sequence else None


def _number(value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    if not isinstance(value, (int, float, str)) and hasattr(value, "__len__"):
        value = value[0] if len(value) else default  # a multi-valued element: the first
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _windows(item: Any) -> list[tuple[float, float]]:
    centers, widths = item.get("WindowCenter"), item.get("WindowWidth")
    if centers is None or widths is None:
        return []
    centers = list(centers) if not isinstance(centers, (str, int, float)) and hasattr(centers, "__len__") else [centers]
    widths = list(widths) if not isinstance(widths, (str, int, float)) and hasattr(widths, "__len__") else [widths]
    pairs = []
    for c, w in zip(centers, widths):
        c, w = _number(c, math.nan), _number(w, math.nan)
        if math.isfinite(c) and math.isfinite(w) and w >= 1:
            pairs.append((c, w))
    return pairs


def _pixel_spacing(ds: Any, index: int) -> list[float] | None:
    for item in (_group(ds, "PerFrameFunctionalGroupsSequence", index),
                 _group(ds, "SharedFunctionalGroupsSequence", 0)):
        measures = _first(item, "PixelMeasuresSequence") if item is not None else None
        if measures is not None and measures.get("PixelSpacing"):
            return [float(v) for v in measures.PixelSpacing]
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        return [float(v) for v in spacing] if spacing else None
    except (TypeError, ValueError):
        return None


# Per-record metadata columns of DICOM records (store.metadata), with fixed kinds so that every
# shard types them alike. Numbers are floats (NaN: absent, or a record that is not DICOM),
# strings "" when absent.
METADATA_KINDS: dict[str, str] = {
    "dicom_frame": "float",  # frame index in its file (0 = first)
    "dicom_frames": "float",  # frames in the file
    "dicom_photometric": "string",  # the file's Photometric Interpretation (MONOCHROME1: inverted)
    "dicom_modality": "string",  # CT, MR, CR, DX, MG, US, ...
    "dicom_bits_stored": "float",
    "dicom_rescale_slope": "float",  # applied: the record holds slope * stored + intercept
    "dicom_rescale_intercept": "float",
    "dicom_window_center": "float",  # the file's first window, in the record's values (not applied)
    "dicom_window_width": "float",
    "dicom_window_function": "string",  # LINEAR, LINEAR_EXACT or SIGMOID
    "dicom_window_applied": "string",  # "" (not applied), "CENTER,WIDTH,FUNCTION" or "VOI LUT"
    "dicom_pixel_spacing_row": "float",  # mm
    "dicom_pixel_spacing_col": "float",
    "dicom_transfer_syntax": "string",  # the file's Transfer Syntax UID
    "dicom_notes": "string",  # e.g. "modality LUT applied", why a codestream was not kept
}


def record_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata columns (METADATA_KINDS) of one record from its ``DicomFrame.meta``."""
    applied = meta.get("window_applied")
    spacing = meta.get("pixel_spacing") or [None, None]
    notes = [text for key, text in (("modality_lut", "modality LUT applied"),
                                    ("voi_lut", "the file has a VOI LUT")) if meta.get(key)]
    if meta.get("codestream_refused"):
        notes.append(f"codestream not kept: {meta['codestream_refused']}")
    values = {
        "dicom_frame": meta.get("frame"), "dicom_frames": meta.get("frames"),
        "dicom_photometric": meta.get("photometric"), "dicom_modality": meta.get("modality"),
        "dicom_bits_stored": meta.get("bits_stored"),
        "dicom_rescale_slope": meta.get("rescale_slope"),
        "dicom_rescale_intercept": meta.get("rescale_intercept"),
        "dicom_window_center": meta.get("window_center"),
        "dicom_window_width": meta.get("window_width"),
        "dicom_window_function": meta.get("window_function"),
        "dicom_window_applied": ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in applied)
        if isinstance(applied, list) else (applied or ""),
        "dicom_pixel_spacing_row": spacing[0], "dicom_pixel_spacing_col": spacing[1] if len(spacing) > 1 else None,
        "dicom_transfer_syntax": meta.get("transfer_syntax"), "dicom_notes": "; ".join(notes),
    }
    return {name: (None if value is None else float(value) if METADATA_KINDS[name] == "float"
                   else str(value)) for name, value in values.items()}


def policy_json(policy: PixelPolicy, meta: dict[str, Any]) -> bytes:
    """The JSON kept beside a JPEG 2000 codestream: the policy and the record's metadata."""
    return json.dumps({"policy": policy.to_json(), "meta": meta}, sort_keys=True).encode("utf-8")
