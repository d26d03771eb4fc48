"""Colour jitter: brightness and contrast for any channel count; saturation and hue for RGB. Random
grayscale for RGB."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import cv2
import numpy as np

from ..pixels import max_value, restore_dtype
from .base import Op, register

__all__ = ["ColorJitter", "JitterParams", "RandomGrayscale", "RandomSolarize", "hsv_matrix", "solarized"]

# RGB <-> YIQ, the colour space DALI's ``hsv`` works in (hue is a rotation of the I/Q plane,
# saturation a scaling of it), so both paths compute the same linear map.
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.312]], np.float64)
_YIQ2RGB = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]], np.float64)


# pixel types OpenCV's transform and addWeighted take: every type a store is read as
_OPENCV_TYPES = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32))


# Hue and saturation keep Y and turn and scale the I/Q plane: the RGB matrix is
# KEEP_Y + s cos(h) SCALE_IQ + s sin(h) TURN_IQ, three fixed parts
_HSV_PARTS = np.stack([np.outer(_YIQ2RGB[:, 0], _RGB2YIQ[0]), _YIQ2RGB[:, 1:] @ _RGB2YIQ[1:],
                       _YIQ2RGB[:, 1:] @ np.array([[0.0, 1.0], [-1.0, 0.0]]) @ _RGB2YIQ[1:]])


def _hsv_weights(hue_degrees: float, saturation: float) -> tuple[float, float, float]:
    """The weights of the three ``_HSV_PARTS`` in the hue/saturation matrix."""
    h = math.radians(hue_degrees)
    return 1.0, saturation * math.cos(h), saturation * math.sin(h)


def hsv_matrix(hue_degrees: float, saturation: float) -> np.ndarray:
    """The 3x3 RGB->RGB matrix that rotates hue by ``hue_degrees`` and scales saturation."""
    return np.tensordot(_hsv_weights(hue_degrees, saturation), _HSV_PARTS, 1).astype(np.float32)


def _affine_parts(parts: np.ndarray) -> np.ndarray:
    """Each 3x3 part ``P`` as two 3x4 affine maps: ``[P | 0]`` (the pixel term) and ``[0 | P 1]``
    (the shift term: its row sums), stacked as 2k x 12."""
    zeros = np.zeros((*parts.shape[:2], 1))
    pixel = np.concatenate([parts, zeros], axis=2)
    shift = np.concatenate([np.zeros_like(parts), parts.sum(axis=2, keepdims=True)], axis=2)
    return np.concatenate([pixel, shift]).reshape(2 * len(parts), 12)


# ColorJitter's 3x4 map as one dot product of weights and these rows (per sample: ~2 us of NumPy
# under the GIL, where composing the matrix took ~8): brightness and contrast alone, or with hue
# and saturation (YIQ's matrices are rounded to three places: their product is not the identity)
_JITTER_ROWS = _affine_parts(np.eye(3)[None])
_HSV_JITTER_ROWS = _affine_parts(_HSV_PARTS)


def _factor_range(value: float | tuple[float, float], name: str, center: float, bounds: tuple[float, float]) -> tuple[float, float]:
    """torchvision's convention: a number v means [center - v, center + v]; a pair is the range."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"ColorJitter {name} must be non-negative, got {value}")
        low, high = center - value, center + value
    else:
        low, high = (float(v) for v in value)
    low, high = max(low, bounds[0]), min(high, bounds[1])
    if low > high:
        raise ValueError(f"ColorJitter {name} range [{low}, {high}] is empty")
    return low, high


class JitterParams(NamedTuple):
    brightness: float
    contrast: float
    saturation: float
    hue: float  # fraction of the colour circle


UNCHANGED = JitterParams(1.0, 1.0, 1.0, 0.0)  # what ColorJitter draws for a sample it leaves alone


@register
@dataclass(frozen=True)
class ColorJitter(Op):
    """Randomly change brightness, contrast, saturation and hue, in that order.

    Each of ``brightness``, ``contrast``, ``saturation`` is a factor range: a number ``v`` means
    a factor drawn from [1 - v, 1 + v] (0: unchanged), a pair is the range itself. ``hue`` is a
    shift in fractions of the colour circle, drawn from [-v, v] (at most 0.5), or a pair.

    ``p``: the probability a sample is jittered at all (SimCLR's and MoCo's
    ``RandomApply([ColorJitter(...)], p=0.8)``); others are left as they are.

    Brightness multiplies every value; contrast blends with the image's mean value (over all
    channels), so both mean the same for 1, 3 or 12 channels. Saturation and hue only have a
    meaning for RGB: they are applied to 3-channel images and skipped for other channel counts.
    Integer images are computed in float and rounded back (uint16 keeps its 16 bits).
    """

    brightness: float | tuple[float, float] = 0.0
    contrast: float | tuple[float, float] = 0.0
    saturation: float | tuple[float, float] = 0.0
    hue: float | tuple[float, float] = 0.0
    p: float = 1.0

    param_count: ClassVar[int] = 4  # brightness, contrast, saturation factors; hue shift

    def __post_init__(self) -> None:
        self._ranges()  # validate at construction
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"ColorJitter p must be within 0..1, got {self.p!r}")

    def _ranges(self) -> tuple[tuple[float, float], ...]:
        inf = float("inf")
        hue = (-self.hue, self.hue) if isinstance(self.hue, (int, float)) else tuple(self.hue)
        if not -0.5 <= hue[0] <= hue[1] <= 0.5:
            raise ValueError(f"ColorJitter hue must lie in [-0.5, 0.5], got {self.hue}")
        return (
            _factor_range(self.brightness, "brightness", 1.0, (0.0, inf)),
            _factor_range(self.contrast, "contrast", 1.0, (0.0, inf)),
            _factor_range(self.saturation, "saturation", 1.0, (0.0, inf)),
            (float(hue[0]), float(hue[1])),
        )

    def draw(self, rng: np.random.Generator, height: int, width: int) -> JitterParams:
        applied = self.p >= 1.0 or rng.random() < self.p  # (no draw at p=1: seeds replay as before p existed)
        drawn = JitterParams(*(float(rng.uniform(low, high)) for low, high in self._ranges()))
        return drawn if applied else UNCHANGED

    def apply(self, image: np.ndarray, params: JitterParams) -> np.ndarray:
        if params == UNCHANGED:
            return image
        if image.dtype in _OPENCV_TYPES and image.size:
            return self._affine(image, params)
        x = image.astype(np.float32) * np.float32(params.brightness)
        if params.contrast != 1.0:
            mean = np.float32(x.mean())
            x = mean + np.float32(params.contrast) * (x - mean)
        if image.shape[2] == 3 and (params.saturation != 1.0 or params.hue != 0.0):
            x = x @ hsv_matrix(params.hue * 360.0, params.saturation).T
        return restore_dtype(x, image.dtype)

    @staticmethod
    def _affine(image: np.ndarray, params: JitterParams) -> np.ndarray:
        """Brightness, contrast and (RGB) the hue/saturation matrix are one affine map of each
        pixel, ``M (c b x + (1 - c) b mean(x))``: one OpenCV pass that releases the GIL
        (``transform`` for RGB, ``addWeighted`` over the values for other channel counts), which
        saturates and rounds integers as ``restore_dtype`` does. The NumPy path (other pixel
        types) makes ~10 passes (224 px: 8-bit RGB 490 vs 45 us, and most of the host stage's GIL
        time per image; 16-bit RGB 798 vs 34, 6-channel 1167 vs 31; float32 RGB 282 vs 47).
        Rounding may differ from it by one grey level where a value falls near .5, floats in the
        last bits."""
        b, c = params.brightness, params.contrast
        height, width, channels = image.shape
        values = np.ascontiguousarray(image).reshape(height, width * channels)  # a view where it can
        mean = b * cv2.mean(values)[0] if c != 1.0 else 0.0  # over all channels
        if channels != 3:  # brightness and contrast only: every value alike
            return cv2.addWeighted(values, c * b, values, 0.0, (1.0 - c) * mean).reshape(image.shape)
        # M (c b x) + (1 - c) b mean M 1: the pixel term's weights, then the shift term's
        pixel, shift = c * b, (1.0 - c) * mean
        if params.saturation != 1.0 or params.hue != 0.0:
            weights = _hsv_weights(params.hue * 360.0, params.saturation)
            rows = _HSV_JITTER_ROWS
            coefficients = [pixel * w for w in weights] + [shift * w for w in weights]
        else:
            rows, coefficients = _JITTER_ROWS, [pixel, shift]
        matrix = np.dot(coefficients, rows).reshape(3, 4).astype(np.float32)
        return cv2.transform(values.reshape(image.shape), matrix)

    def encode(self, params: JitterParams) -> tuple[float, ...]:
        return tuple(float(v) for v in params)

    def decode(self, values: Any) -> JitterParams:
        return JitterParams(*(float(v) for v in values))

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn, types

        from ._dali_util import as_float, like, on_device

        _, (c_lo, c_hi), (s_lo, s_hi), (h_lo, h_hi) = self._ranges()
        x = as_float(images) * on_device(params[0], ctx)
        if (c_lo, c_hi) != (1.0, 1.0):
            # blend with the image's own mean (over all channels), as the NumPy path does, for any
            # channel count and bit depth; plain arithmetic, as DALI takes no GPU named arguments
            mean = fn.reductions.mean(x)
            x = mean + on_device(params[1], ctx) * (x - mean)
        rgb = getattr(ctx, "channels", 3) == 3
        if rgb and ((s_lo, s_hi) != (1.0, 1.0) or (h_lo, h_hi) != (0.0, 0.0)):
            x = fn.hsv(x, hue=params[3] * 360.0, saturation=params[2], dtype=types.FLOAT)
        return like(x, images)


@register
@dataclass(frozen=True)
class RandomGrayscale(Op):
    """torchvision's ``RandomGrayscale(p)``: with probability ``p`` an RGB image becomes its luma,
    ``0.299 R + 0.587 G + 0.114 B``, in each of its three channels (integers rounded); images of
    other channel counts are left as they are.

    The luma is ColorJitter's saturation at 0 (``hsv_matrix(0, 0)``: one OpenCV ``transform``
    pass; DALI's ``hsv`` with ``saturation=0`` on the GPU).
    """

    p: float = 0.1

    param_count: ClassVar[int] = 1  # 1.0: this sample goes gray

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"RandomGrayscale p must be within 0..1, got {self.p!r}")

    def draw(self, rng: np.random.Generator, height: int, width: int) -> bool:
        return bool(rng.random() < self.p)

    def apply(self, image: np.ndarray, params: bool) -> np.ndarray:
        if not params or image.shape[2] != 3 or not image.size:
            return image
        luma = hsv_matrix(0.0, 0.0)
        if image.dtype in _OPENCV_TYPES:
            return cv2.transform(np.ascontiguousarray(image), luma)
        return restore_dtype(image.astype(np.float32) @ luma.T, image.dtype)

    def encode(self, params: bool) -> tuple[float, ...]:
        return (float(params),)

    def decode(self, values: Any) -> bool:
        return bool(values[0] > 0.5)

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn, types

        from ._dali_util import as_float, like

        if getattr(ctx, "channels", 3) != 3:
            return images
        return like(fn.hsv(as_float(images), saturation=1.0 - params[0], dtype=types.FLOAT), images)


def solarized(image: np.ndarray, cut: float) -> np.ndarray:
    """``image`` with every value at or above ``cut`` (in the image's units) inverted, ``full - x``:
    8-bit images through one OpenCV table lookup (not NumPy's three passes), other integer images
    compared with the whole-number cut in their own type (no float copy of the image)."""
    full = max_value(image.dtype)
    if image.dtype == np.uint8:
        values = np.arange(256)
        table = np.where(values >= cut, 255 - values, values).astype(np.uint8)
        return cv2.LUT(np.ascontiguousarray(image), table).reshape(image.shape)
    if image.dtype.kind in "ui":
        if math.ceil(cut) > np.iinfo(image.dtype).max:
            return image
        cut = image.dtype.type(math.ceil(cut))
    return np.where(image >= cut, image.dtype.type(full) - image, image)


@register
@dataclass(frozen=True)
class RandomSolarize(Op):
    """torchvision's ``RandomSolarize``: with probability ``p`` every value at or above
    ``threshold`` is inverted (``full - x``; BYOL's and DINO's lists). ``threshold`` is a fraction
    of the pixel type's full scale, so one list serves 8-bit, 16-bit and float images: torchvision's
    ``RandomSolarize(threshold=128)`` on 8-bit images is ``threshold=128 / 255`` (or the default 0.5,
    which inverts the same values of 8-bit images: 128 and above). Any channel count.
    """

    threshold: float = 0.5
    p: float = 0.5

    param_count: ClassVar[int] = 1  # 1.0: this sample is solarized

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"RandomSolarize p must be within 0..1, got {self.p!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"RandomSolarize threshold is a fraction of full scale, within 0..1; got {self.threshold!r}")

    def draw(self, rng: np.random.Generator, height: int, width: int) -> bool:
        return bool(rng.random() < self.p)

    def apply(self, image: np.ndarray, params: bool) -> np.ndarray:
        if not params:
            return image
        return solarized(image, self.threshold * max_value(image.dtype))

    def encode(self, params: bool) -> tuple[float, ...]:
        return (float(params),)

    def decode(self, values: Any) -> bool:
        return bool(values[0] > 0.5)

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from ._dali_util import as_float, like, on_device

        full = float(ctx.max_value)
        x = as_float(images)
        solarized = on_device(params[0], ctx) * (x >= self.threshold * full)  # 1 where a value flips
        return like(x + solarized * (full - 2.0 * x), images)
