"""Random affine transform (rotation, translation, scale, shear) keeping the image size, and the
one warp it and ``Rotate`` share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from ..pixels import by_channel_chunks, restore_dtype
from .base import Op, register

__all__ = ["RandomAffine", "warp"]

INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def warp(image: np.ndarray, matrix: np.ndarray, fill: float, interpolation: str = "bilinear") -> np.ndarray:
    """``image`` sampled at ``matrix`` (2x3, output pixel -> source pixel, pixel centres at whole
    numbers), the same size, ``fill`` where the source is outside the image; any channel count.

    16-bit images are warped through float32: OpenCV interpolates 16-bit pixels with 5-bit weights
    (int16 Hounsfield units rotated directly were off by up to 5 where a pixel step is 300)."""
    h, w = image.shape[:2]
    flags = INTERPOLATIONS[interpolation] | cv2.WARP_INVERSE_MAP
    border = (float(fill),) * 4

    def one(chunk: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(chunk, matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border)

    if image.dtype in (np.uint16, np.int16) and interpolation == "bilinear":
        return restore_dtype(by_channel_chunks(image.astype(np.float32), one), image.dtype)
    return by_channel_chunks(image, one)


def _range(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"RandomAffine {name} must be non-negative as one number, got {value}")
        return -float(value), float(value)
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"RandomAffine {name} range [{low}, {high}] is empty")
    return low, high


@register
@dataclass(frozen=True)
class RandomAffine(Op):
    """torchvision's ``RandomAffine``: an angle from ``degrees`` (clockwise, as torchvision's
    ``affine``), a shift of up to ``translate`` = (fraction of the width, of the height) in whole
    pixels, a ``scale`` factor and a ``shear`` in degrees (one number or an x range: along x; four
    numbers: x and y ranges), about the image centre, keeping the size; ``fill`` where the source
    is outside the image (in the image's units). The draws and the matrix are torchvision's.

    ``interpolation`` is ``"bilinear"`` by default, as fastload's ``Rotate`` (torchvision's
    default is ``"nearest"``: pass it for the same pixels as there).

    Example (albumentations' ShiftScaleRotate as a radiology or Kaggle list writes it)::

        ops.RandomAffine(degrees=15, translate=(0.0625, 0.0625), scale=(0.9, 1.1))
    """

    degrees: float | tuple[float, float] = 0.0
    translate: tuple[float, float] | None = None
    scale: tuple[float, float] | None = None
    shear: float | tuple[float, ...] | None = None
    fill: float = 0.0
    interpolation: str = "bilinear"

    param_count: ClassVar[int] = 6  # the output -> source matrix, 2x3, pixel centres at whole numbers
    draw_needs_size: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _range(self.degrees, "degrees")
        if self.translate is not None and (len(self.translate) != 2 or not all(0 <= t <= 1 for t in self.translate)):
            raise ValueError(f"RandomAffine translate must be two fractions in [0, 1], got {self.translate}")
        if self.scale is not None and (len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]):
            raise ValueError(f"RandomAffine scale must be (low, high) with 0 < low <= high, got {self.scale}")
        self.shear_ranges()
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"RandomAffine interpolation must be one of {sorted(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")

    def shear_ranges(self) -> tuple[tuple[float, float], tuple[float, float] | None]:
        """The x and y shear ranges in degrees (y: None when only x shears)."""
        if self.shear is None:
            return (0.0, 0.0), None
        if isinstance(self.shear, (int, float)) or len(self.shear) == 2:
            return _range(self.shear, "shear"), None
        if len(self.shear) == 4:
            return _range(self.shear[:2], "shear"), _range(self.shear[2:], "shear")
        raise ValueError(f"RandomAffine shear must be one number, two or four, got {self.shear}")

    def draw(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        angle = rng.uniform(*_range(self.degrees, "degrees"))
        tx = ty = 0
        if self.translate is not None:
            dx, dy = self.translate[0] * width, self.translate[1] * height
            tx, ty = int(round(rng.uniform(-dx, dx))), int(round(rng.uniform(-dy, dy)))
        scale = rng.uniform(*self.scale) if self.scale is not None else 1.0
        x_range, y_range = self.shear_ranges()
        shear_x = rng.uniform(*x_range) if self.shear is not None else 0.0
        shear_y = rng.uniform(*y_range) if y_range is not None else 0.0
        centre = ((width - 1) / 2.0, (height - 1) / 2.0)
        # in float32, as the DALI feed carries it: every backend then warps with the same matrix
        return inverse_matrix(centre, angle, (tx, ty), scale, (shear_x, shear_y)).astype(np.float32).astype(np.float64)

    def apply(self, image: np.ndarray, params: np.ndarray) -> np.ndarray:
        return warp(image, params, self.fill, self.interpolation)

    def encode(self, params: np.ndarray) -> tuple[float, ...]:
        return tuple(float(v) for v in np.ravel(params))

    def decode(self, values: Any) -> np.ndarray:
        return np.asarray(values, np.float64).reshape(2, 3)

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn, types

        from ._dali_util import as_float, like

        # DALI's pixel centres sit at half-integers, OpenCV's (the matrix's) at whole numbers:
        # x_dali = x + 0.5, so the translation becomes t + 0.5 - 0.5 * (row sum)
        m = [params[i] for i in range(6)]
        rows = [fn.stack(m[0], m[1], m[2] + 0.5 - 0.5 * (m[0] + m[1])),
                fn.stack(m[3], m[4], m[5] + 0.5 - 0.5 * (m[3] + m[4]))]
        matrix = fn.stack(*rows)  # 2 x 3
        interp = types.INTERP_LINEAR if self.interpolation == "bilinear" else types.INTERP_NN
        # float in between: DALI's CPU warp takes uint8 and float but not uint16
        warped = fn.warp_affine(as_float(images), matrix=matrix, fill_value=float(self.fill), interp_type=interp)
        return like(warped, images)


def inverse_matrix(centre: tuple[float, float], angle: float, translate: tuple[float, float], scale: float,
                   shear: tuple[float, float]) -> np.ndarray:
    """torchvision's ``_get_inverse_affine_matrix``: the output -> source map of rotating by
    ``angle`` (degrees, clockwise in image coordinates), scaling and shearing about ``centre``,
    then shifting by ``translate``: ``C * RSS^-1 * C^-1 * T^-1``, as a 2x3 array."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    cx, cy = centre
    tx, ty = translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = np.array([[d, -b], [-c, a]]) / scale  # RSS^-1
    shift = m @ np.array([-cx - tx, -cy - ty]) + np.array([cx, cy])
    return np.concatenate([m, shift[:, None]], axis=1)
