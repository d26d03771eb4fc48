"""What a DICOM record records: its metadata columns, and the JSON kept beside a codestream."""

from __future__ import annotations

import json
from typing import Any

from ..pixelpolicy import PixelPolicy

__all__ = ["METADATA_KINDS", "record_metadata", "policy_json"]

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
