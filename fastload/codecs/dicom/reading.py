"""Identify a DICOM file, read its data set with pydicom, and check its header (geometry, pixel
limit) before any pixel is decoded."""

from __future__ import annotations

import io
import warnings
from typing import Any

from ..._optional import require
from ...errors import BadInputError
from ..base import ImageInfo

__all__ = ["is_dicom", "read", "probe", "geometry", "int_attr", "PREFIX_OFFSET"]

PREFIX_OFFSET = 128
_EXPLICIT_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV".split())


def _pydicom():
    return require("pydicom", "dicom", "Reading DICOM files")


def is_dicom(data: bytes) -> bool:
    """``DICM`` at offset 128 (checked before any other signature: the 128-byte preamble may
    hold a TIFF header, as dual-personality files do), or a preamble-less DICOM data set that
    starts with a group 0002 or 0008 element in little-endian byte order."""
    if data[PREFIX_OFFSET : PREFIX_OFFSET + 4] == b"DICM":
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


def read(data: bytes, path: str, stop_before_pixels: bool) -> Any:
    """The pydicom Dataset of ``data`` (preamble-less files too). Raises BadInputError."""
    pydicom = _pydicom()
    force = data[PREFIX_OFFSET : PREFIX_OFFSET + 4] != b"DICM"
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


def int_attr(ds: Any, name: str, default: int) -> int:
    """Attribute ``name`` of ``ds`` as an int; ``default`` when absent, empty or not a number."""
    value = ds.get(name, default)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError):
        return default


def geometry(ds: Any, path: str, max_pixels: int, pixels_read: bool = True) -> tuple[int, int, int, int]:
    """(rows, columns, samples per pixel, frames), checked before any pixel is decoded."""
    if pixels_read and not any(name in ds for name in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise BadInputError(path, "the DICOM file holds no pixel data (not an image: a report, "
                                  "structure set, or other non-image object)")
    rows, cols = int_attr(ds, "Rows", 0), int_attr(ds, "Columns", 0)
    if rows <= 0 or cols <= 0:
        raise BadInputError(path, f"DICOM header claims an empty image ({cols}x{rows})")
    if rows * cols > max_pixels:
        raise BadInputError(path, f"DICOM header claims {cols}x{rows} = {rows * cols:,} pixels, "
                                  f"more than the limit of {max_pixels:,}; raise max_pixels "
                                  "(--max-pixels) if this is intended")
    return rows, cols, int_attr(ds, "SamplesPerPixel", 1), max(1, int_attr(ds, "NumberOfFrames", 1))


def probe(data: bytes, path: str, max_pixels: int) -> ImageInfo:
    """Header facts of a DICOM file as an ImageInfo (dtype: the stored type)."""
    ds = read(data, path, stop_before_pixels=True)
    rows, cols, samples, _ = geometry(ds, path, max_pixels, pixels_read=False)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    channels = 3 if samples == 3 or photometric == "PALETTE COLOR" else 1
    bits = int_attr(ds, "BitsAllocated", 8)
    dtype = "uint8" if bits <= 8 else ("int16" if int_attr(ds, "PixelRepresentation", 0) else "uint16")
    return ImageInfo("dicom", rows, cols, channels, dtype, photometric)
