"""Random rotation about the image centre, keeping the image size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from .affine import warp
from .base import Op, register

__all__ = ["Rotate"]


@register
@dataclass(frozen=True)
class Rotate(Op):
    """Rotate by an angle drawn uniformly from [-max_degrees, max_degrees] (or a (low, high) pair),
    counter-clockwise for positive angles, bilinear, keeping the size; uncovered corners get
    ``fill`` (in the image's own units: 0..255 for uint8, 0..65535 for uint16)."""

    max_degrees: float | tuple[float, float] = 15.0
    fill: float = 0.0

    param_count: ClassVar[int] = 1  # the angle in degrees

    def __post_init__(self) -> None:
        low, high = self.angle_range()
        if low > high:
            raise ValueError(f"Rotate angle range [{low}, {high}] is empty")

    def angle_range(self) -> tuple[float, float]:
        if isinstance(self.max_degrees, (int, float)):
            if self.max_degrees < 0:
                raise ValueError(f"Rotate max_degrees must be non-negative, got {self.max_degrees}")
            return -float(self.max_degrees), float(self.max_degrees)
        low, high = self.max_degrees
        return float(low), float(high)

    def draw(self, rng: np.random.Generator, height: int, width: int) -> float:
        return float(rng.uniform(*self.angle_range()))

    def apply(self, image: np.ndarray, params: float) -> np.ndarray:
        if params == 0.0:
            return image
        h, w = image.shape[:2]
        # pixel centres sit at integer coordinates in OpenCV, so the centre is ((w-1)/2, (h-1)/2)
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), params, 1.0)
        return warp(image, cv2.invertAffineTransform(matrix), self.fill)

    def encode(self, params: float) -> tuple[float, ...]:
        return (float(params),)

    def decode(self, values: Any) -> float:
        return float(values[0])

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn, types

        from ._dali_util import as_float, like

        # float in between: DALI's CPU rotate takes uint8 and float but not uint16
        rotated = fn.rotate(as_float(images), angle=params[0], keep_size=True,
                            fill_value=float(self.fill), interp_type=types.INTERP_LINEAR)
        return like(rotated, images)
