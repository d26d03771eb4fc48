"""The grayscale value policy of a DICOM frame: stored values -> real values (rescale) ->
(MONOCHROME1 inversion, window) -> the output type, exactly or not at all.

The DICOM reader (``fastload.codecs.dicom``) chooses a policy per frame and applies it; a kept
JPEG 2000 codestream carries it as JSON, and the JPEG 2000 decoder (``fastload.codecs.jpeg2000``)
applies it again after decoding the stored values: both import it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BadInputError

__all__ = ["PixelPolicy"]


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
