"""Gaussian blur with a random sigma per sample."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from ..pixels import by_channel_chunks
from .base import Op, register

__all__ = ["GaussianBlur", "window_size"]

# A sigma this small makes a 3-tap kernel of [0, 1, 0]: how DALI skips the blur for a sample.
_IDENTITY_SIGMA = 1e-3


def window_size(sigma: float) -> int:
    """The kernel width DALI's gaussian_blur derives from sigma: 2 * ceil(3 * sigma) + 1."""
    return 2 * math.ceil(3 * sigma) + 1


@register
@dataclass(frozen=True)
class GaussianBlur(Op):
    """Blur with probability ``p``, sigma (pixels) drawn from ``sigma`` = (low, high) or one value.

    The kernel spans +-3 sigma; borders reflect (OpenCV's REFLECT_101, DALI's default).
    """

    sigma: float | tuple[float, float] = (0.1, 2.0)
    p: float = 1.0

    param_count: ClassVar[int] = 1  # sigma (a tiny one for samples left unblurred)

    def __post_init__(self) -> None:
        low, high = self.sigma_range()
        if not 0 < low <= high:
            raise ValueError(f"GaussianBlur sigma must be positive with low <= high, got {self.sigma}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"GaussianBlur p must be in [0, 1], got {self.p}")

    def sigma_range(self) -> tuple[float, float]:
        if isinstance(self.sigma, (int, float)):
            return float(self.sigma), float(self.sigma)
        low, high = self.sigma
        return float(low), float(high)

    def draw(self, rng: np.random.Generator, height: int, width: int) -> float | None:
        """The sample's sigma, or None when it is not blurred."""
        apply = rng.random() < self.p
        sigma = float(rng.uniform(*self.sigma_range()))
        return sigma if apply else None

    def apply(self, image: np.ndarray, params: float | None) -> np.ndarray:
        if params is None:
            return image
        k = window_size(params)

        def blur(chunk: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(chunk, (k, k), params, borderType=cv2.BORDER_REFLECT_101)

        # GaussianBlur takes any channel count, but chunking keeps the same rule everywhere
        return by_channel_chunks(image, blur)

    def encode(self, params: float | None) -> tuple[float, ...]:
        return (_IDENTITY_SIGMA if params is None else float(params),)

    def decode(self, values: Any) -> float | None:
        sigma = float(values[0])
        return None if sigma == np.float32(_IDENTITY_SIGMA) else sigma

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn

        return fn.gaussian_blur(images, sigma=params[0])
