"""Per-frame attributes of a DICOM data set: rescale, windows and pixel spacing, from the
per-frame functional groups of enhanced multi-frame objects, else the shared ones, else the
top level."""

from __future__ import annotations

import math
from typing import Any

from .options import WINDOW_FUNCTIONS

__all__ = ["frame_attributes", "pixel_spacing"]


def frame_attributes(ds: Any, index: int) -> dict[str, Any]:
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


def pixel_spacing(ds: Any, index: int) -> list[float] | None:
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
