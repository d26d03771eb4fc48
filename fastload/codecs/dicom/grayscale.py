"""The grayscale policy of a DICOM frame: the output type for its real values (rescale or
modality LUT), MONOCHROME1 inversion, and the window (or VOI LUT) to apply, if any."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from ...errors import BadInputError
from ..pixelpolicy import PixelPolicy
from .attributes import frame_attributes
from .options import DicomOptions
from .reading import int_attr

__all__ = ["grayscale"]

_EXACT_FLOAT32 = 2**24  # float32 holds every integer up to this


def grayscale(ds: Any, stored: np.ndarray, index: int, options: DicomOptions,
              meta: dict[str, Any], path: str) -> tuple[np.ndarray, PixelPolicy | None]:
    """Frame ``index``'s ``HxWx1`` pixels by the policy, and the policy a kept codestream can
    carry (None: a modality or VOI LUT, which the policy cannot express). Fills in ``meta``."""
    attrs = frame_attributes(ds, index)
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
        return _apply_voi_lut(ds, stored, policy, path), None
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
    return policy.apply(stored, path), None if lut else policy


def _stored_range(ds: Any, stored: np.ndarray) -> tuple[int, int]:
    """The stored values the header allows (Bits Stored, Pixel Representation)."""
    bits = int_attr(ds, "BitsStored", stored.dtype.itemsize * 8)
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
