"""A DICOM file's records: the frames the options ask for, each turned into pixels by the policy
(colour as RGB, palette looked up, grayscale by ``grayscale``), with the metadata to record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadInputError
from ..pixelpolicy import PixelPolicy
from .attributes import pixel_spacing
from .encapsulated import JPEG2000_SYNTAXES, codestreams, decoded_frames
from .grayscale import grayscale
from .options import DicomOptions
from .reading import geometry, int_attr, read

__all__ = ["DicomFrame", "read_frames", "decode"]


@dataclass
class DicomFrame:
    """One packed record's worth of a DICOM file: the policy's pixels and what to record."""

    image: np.ndarray  # HxWxC after the policy
    meta: dict[str, Any]  # per-record metadata (JSON-safe)
    codestream: bytes | None = None  # the frame's JPEG 2000 codestream, when it is to be kept
    policy: PixelPolicy | None = None  # the grayscale policy, for a kept codestream


def decode(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """The first frame of a DICOM file by the default policy (what ``images.decode`` gives)."""
    # No pixel limit here: packing checked it; a reader decodes what was packed.
    return read_frames(data, path, DicomOptions(), max_pixels=1 << 62)[0].image


def read_frames(data: bytes, path: str, options: DicomOptions, max_pixels: int) -> list[DicomFrame]:
    """Decode the frames ``options`` asks for and apply the policy. Raises BadInputError."""
    ds = read(data, path, stop_before_pixels=False)
    rows, cols, samples, count = geometry(ds, path, max_pixels)
    indices = [0] if options.frames == "first" else list(range(count))
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    keep_codestream = (options.payload == "codestream" and syntax in JPEG2000_SYNTAXES and samples == 1)
    kept = codestreams(ds, count, path) if keep_codestream else None
    frames = []
    for index, stored in zip(indices, decoded_frames(ds, indices, path)):
        frame = _convert(ds, stored, index, count, options, path)
        frame.meta["transfer_syntax"] = syntax
        if kept is not None and frame.policy is not None:
            frame.codestream = kept[index]
        frames.append(frame)
    if frames and frames[0].image.shape[:2] != (rows, cols):
        raise BadInputError(path, f"DICOM header says {cols}x{rows}, pixels are "
                                  f"{frames[0].image.shape[1]}x{frames[0].image.shape[0]}")
    return frames


def _convert(ds: Any, stored: np.ndarray, index: int, count: int, options: DicomOptions,
             path: str) -> DicomFrame:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    meta: dict[str, Any] = {"source": "dicom", "frame": index, "frames": count,
                            "photometric": photometric, "modality": str(ds.get("Modality", "") or ""),
                            "bits_stored": int_attr(ds, "BitsStored", stored.dtype.itemsize * 8),
                            "signed": int_attr(ds, "PixelRepresentation", 0) == 1}
    spacing = pixel_spacing(ds, index)
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
    image, policy = grayscale(ds, stored, index, options, meta, path)
    return DicomFrame(image, meta, policy=policy)


def _integer_pixels(image: np.ndarray, path: str) -> np.ndarray:
    if image.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(image)
    if image.dtype.kind in "ui" and image.size and 0 <= image.min() and image.max() <= 65535:
        return image.astype(np.uint16)  # exact: every value fits
    if image.dtype.kind == "u" and image.dtype.itemsize == 4:
        return image.astype(np.uint32)  # 32-bit colour keeps its 32 bits (native byte order)
    raise BadInputError(path, f"DICOM colour pixels of type {image.dtype} are not supported")
