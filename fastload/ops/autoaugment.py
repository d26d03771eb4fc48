"""Automatic augmentation policies: TrivialAugment (one of 14 image ops at a random strength per
sample: torchvision's ``TrivialAugmentWide``, the ``ta_wide`` of its reference recipes and timm's),
RandAugment (``num_ops`` of them at one strength: torchvision's, the recipes' ``ra``) and
AutoAugment (the paper's learned policies)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from ..pixels import max_value
from ._policies import POLICIES
from .affine import inverse_matrix, warp
from .base import Op, register
from .color import solarized

__all__ = ["AUGMENTATIONS", "OPERATIONS", "AutoAugment", "RandAugment", "RandomAdjustSharpness", "RandomAutocontrast",
           "RandomEqualize", "RandomInvert", "RandomPosterize", "TrivialAugmentWide", "augment"]

#: The ops TrivialAugment and RandAugment draw from, in torchvision's order (by index here).
AUGMENTATIONS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                 "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
#: Every op a policy may name (AutoAugment's also invert); an op's parameters hold its index here.
OPERATIONS = (*AUGMENTATIONS, "Invert")
_SHARPEN = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13)
_LUMA = np.array([[0.2989, 0.587, 0.114]], np.float32)  # torchvision's grayscale weights
_VALUES = np.arange(256, dtype=np.float32)  # every 8-bit value: per-value ops as 256-entry tables


def _strengths(name: str, bins: int, height: int = 0, width: int = 0, wide: bool = True) -> tuple[np.ndarray | None, bool]:
    """torchvision's magnitude bins of an op (None: it has none) and whether a sign is drawn:
    TrivialAugmentWide's wide space, or RandAugment's (whose shifts scale with the image)."""
    if name in ("ShearX", "ShearY"):
        return np.linspace(0.0, 0.99 if wide else 0.3, bins, dtype=np.float32), True
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        return np.linspace(0.0, 0.99 if wide else 0.9, bins, dtype=np.float32), True
    if name in ("TranslateX", "TranslateY"):
        side = width if name == "TranslateX" else height
        return np.linspace(0.0, 32.0 if wide else 150.0 / 331.0 * side, bins, dtype=np.float32), True
    if name == "Rotate":
        return np.linspace(0.0, 135.0 if wide else 30.0, bins, dtype=np.float32), True
    if name == "Posterize":
        return (8 - np.round(np.arange(bins) / ((bins - 1) / (6 if wide else 4)))).astype(np.float32), False
    if name == "Solarize":
        return np.linspace(1.0, 0.0, bins, dtype=np.float32), False
    return None, False


class _Policy(Op):
    """What TrivialAugmentWide, RandAugment, AutoAugment and the single adjustments share:
    ``ops_per_sample`` ops from ``OPERATIONS`` applied in turn, each drawn with its strength
    (``draw``; TrivialAugmentWide and RandAugment through ``_pick``), each cut back to the pixel type as
    torchvision's ``.to`` does. Parameters: ``PARAMS_PER_OP`` floats an op (its index in
    AUGMENTATIONS and signed strength; then what DALI's lowering reads, ``_lowering_params``: the
    warp's output -> source matrix (6), the blend's factor and the weights of what it blends with
    (luma, luma's mean, smoothed: 3), posterize's bits, solarize's threshold, autocontrast's and
    equalize's flags, whether the op clamps to full scale)."""

    PARAMS_PER_OP: ClassVar[int] = 17
    draw_needs_size: ClassVar[bool] = True  # a rotation turns about the image's centre
    interpolation: ClassVar[str] = "nearest"  # the geometric ops' reads, as torchvision's
    fill: float

    @property
    def ops_per_sample(self) -> int:
        return 1

    @property
    def param_count(self) -> int:  # type: ignore[override]
        return self.PARAMS_PER_OP * self.ops_per_sample

    def _pick(self, rng: np.random.Generator, name: str, height: int, width: int) -> float:
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, height: int, width: int) -> tuple[tuple[int, float, np.ndarray], ...]:
        drawn = []
        for _ in range(self.ops_per_sample):
            name = AUGMENTATIONS[int(rng.integers(len(AUGMENTATIONS)))]
            drawn.append(_step(name, self._pick(rng, name, height, width), height, width))
        return tuple(drawn)

    def apply(self, image: np.ndarray, params: tuple[tuple[int, float, np.ndarray], ...]) -> np.ndarray:
        for index, magnitude, matrix in params:
            if not image.size:
                return image
            if OPERATIONS[index] in GEOMETRIC:
                image = warp(image, matrix, self.fill, "nearest")
            else:
                image = augment(image, OPERATIONS[index], magnitude, self.fill)
        return image

    def encode(self, params: tuple[tuple[int, float, np.ndarray], ...]) -> tuple[float, ...]:
        return tuple(v for index, magnitude, matrix in params
                     for v in (float(index), float(magnitude), *(float(m) for m in np.ravel(matrix)),
                               *_lowering_params(OPERATIONS[index], magnitude)))

    def decode(self, values: Any) -> tuple[tuple[int, float, np.ndarray], ...]:
        n = self.PARAMS_PER_OP
        blocks = [values[k * n : (k + 1) * n] for k in range(self.ops_per_sample)]
        return tuple((int(round(b[0])), float(b[1]), np.asarray(b[2:8], np.float64).reshape(2, 3)) for b in blocks)

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from ._dali_autoaugment import augment_one

        n = self.PARAMS_PER_OP
        for k in range(self.ops_per_sample):
            images = augment_one(images, params[k * n : (k + 1) * n], ctx, self.fill)
        return images


@register
@dataclass(frozen=True)
class TrivialAugmentWide(_Policy):
    """torchvision's ``TrivialAugmentWide``: per sample, one op drawn from ``AUGMENTATIONS`` at a
    strength drawn from its ``num_magnitude_bins`` (negated half the time where it has a sign), with
    torchvision's formulas: shears and shifts (up to 32 px) and rotations (up to 135 degrees) with
    nearest-neighbour reads and ``fill`` (in the image's units); brightness, saturation ("Color"),
    contrast and sharpness blends; posterize, solarize, autocontrast and equalize. 8-bit images
    give torchvision's pixels, but where a geometric op's source point falls exactly between two
    pixels, or a blend within float rounding of a whole level (one level off); 16-bit and float images
    take the same formulas at their own full scale (equalize: through 8 bits, as torchvision's).
    "Color" changes RGB only; contrast uses the RGB luma's mean, the mean of all values for other
    channel counts.

    On the GPU (DALI's operators: every op's stage runs on every sample, left as it is where it is
    not the sample's) the pixels are the CPU's but for Equalize, which is DALI's (OpenCV's formula:
    within a few levels of PIL's).
    """

    num_magnitude_bins: int = 31
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.num_magnitude_bins < 2:
            raise ValueError(f"TrivialAugmentWide num_magnitude_bins must be at least 2, got {self.num_magnitude_bins}")

    def _pick(self, rng: np.random.Generator, name: str, height: int, width: int) -> float:
        strengths, signed = _strengths(name, self.num_magnitude_bins)
        magnitude = float(strengths[rng.integers(len(strengths))]) if strengths is not None else 0.0
        return -magnitude if signed and rng.integers(2) else magnitude


@register
@dataclass(frozen=True)
class RandAugment(_Policy):
    """torchvision's ``RandAugment``: ``num_ops`` ops in turn, each drawn from ``AUGMENTATIONS``,
    all at strength bin ``magnitude`` of ``num_magnitude_bins`` (negated half the time where an op
    has a sign), in RandAugment's space (shears up to 0.3, shifts up to 150/331 of the side, rotations
    up to 30 degrees, blends up to 0.9, posterize to 4 bits). The same ops, formulas and GPU path as
    ``TrivialAugmentWide``; torchvision's reference recipes' ``ra``.
    """

    num_ops: int = 2
    magnitude: int = 9
    num_magnitude_bins: int = 31
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.num_ops < 1:
            raise ValueError(f"RandAugment num_ops must be at least 1, got {self.num_ops}")
        if not 0 <= self.magnitude < self.num_magnitude_bins:
            raise ValueError(f"RandAugment magnitude must be a bin in 0..{self.num_magnitude_bins - 1}, "
                             f"got {self.magnitude}")

    @property
    def ops_per_sample(self) -> int:
        return self.num_ops

    def _pick(self, rng: np.random.Generator, name: str, height: int, width: int) -> float:
        strengths, signed = _strengths(name, self.num_magnitude_bins, height, width, wide=False)
        magnitude = float(strengths[self.magnitude]) if strengths is not None else 0.0
        return -magnitude if signed and rng.random() <= 0.5 else magnitude


@register
@dataclass(frozen=True)
class AutoAugment(_Policy):
    """torchvision's ``AutoAugment``: per sample, one of the ``policy``'s 25 learned sub-policies
    (``"imagenet"``, ``"cifar10"`` or ``"svhn"``: the AutoAugment paper's, as torchvision lists them),
    whose two steps each run with their probability at their strength bin of 10 (RandAugment's
    space; negated half the time where the op has a sign). The ops are TrivialAugmentWide's and
    Invert (``full - x``); the same formulas and GPU path; the recipes' ``imagenet`` auto-augment.
    """

    policy: str = "imagenet"
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"AutoAugment policy must be one of {sorted(POLICIES)}, got {self.policy!r}")

    @property
    def ops_per_sample(self) -> int:
        return 2

    def draw(self, rng: np.random.Generator, height: int, width: int) -> tuple[tuple[int, float, np.ndarray], ...]:
        steps = POLICIES[self.policy][int(rng.integers(len(POLICIES[self.policy])))]
        drawn = []
        for name, probability, strength in steps:
            if not rng.random() <= probability:
                drawn.append(_step("Identity", 0.0, height, width))
                continue
            strengths, signed = _strengths(name, 10, height, width, wide=False)
            magnitude = float(strengths[strength]) if strengths is not None and strength is not None else 0.0
            drawn.append(_step(name, -magnitude if signed and rng.random() <= 0.5 else magnitude, height, width))
        return tuple(drawn)


class _OneStep(_Policy):
    """torchvision's single random adjustments (RandomEqualize & co): one op with probability ``p``,
    on the policies' formulas and GPU path."""

    fill: ClassVar[float] = 0.0  # no geometry: nothing to fill
    p: float

    def _named(self) -> tuple[str, float]:
        raise NotImplementedError

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{type(self).__name__} p must be within 0..1, got {self.p!r}")

    def draw(self, rng: np.random.Generator, height: int, width: int) -> tuple[tuple[int, float, np.ndarray], ...]:
        name, magnitude = self._named() if rng.random() < self.p else ("Identity", 0.0)
        return (_step(name, magnitude, height, width),)


@register
@dataclass(frozen=True)
class RandomEqualize(_OneStep):
    """torchvision's ``RandomEqualize``: PIL's histogram equalization of each channel, with
    probability ``p`` (16-bit and float images through 8 bits, as torchvision's)."""

    p: float = 0.5

    def _named(self) -> tuple[str, float]:
        return "Equalize", 0.0


@register
@dataclass(frozen=True)
class RandomAutocontrast(_OneStep):
    """torchvision's ``RandomAutocontrast``: each channel stretched to full scale, with probability ``p``."""

    p: float = 0.5

    def _named(self) -> tuple[str, float]:
        return "AutoContrast", 0.0


@register
@dataclass(frozen=True)
class RandomInvert(_OneStep):
    """torchvision's ``RandomInvert``: ``full - x``, with probability ``p``."""

    p: float = 0.5

    def _named(self) -> tuple[str, float]:
        return "Invert", 0.0


@register
@dataclass(frozen=True)
class RandomPosterize(_OneStep):
    """torchvision's ``RandomPosterize``: the top ``bits`` bits of each value, with probability ``p``."""

    bits: int = 4
    p: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.bits <= 8:
            raise ValueError(f"RandomPosterize bits must be within 0..8, got {self.bits!r}")

    def _named(self) -> tuple[str, float]:
        return "Posterize", float(self.bits)


@register
@dataclass(frozen=True)
class RandomAdjustSharpness(_OneStep):
    """torchvision's ``RandomAdjustSharpness``: the image blended with its 3x3 smoothing by
    ``sharpness_factor`` (0 smooth, 1 unchanged, 2 sharper), with probability ``p``."""

    sharpness_factor: float = 2.0
    p: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sharpness_factor < 0:
            raise ValueError(f"RandomAdjustSharpness sharpness_factor must be non-negative, got {self.sharpness_factor!r}")

    def _named(self) -> tuple[str, float]:
        return "Sharpness", float(self.sharpness_factor) - 1.0


def _step(name: str, magnitude: float, height: int, width: int) -> tuple[int, float, np.ndarray]:
    """One drawn op as a policy's parameters hold it: its index in OPERATIONS, its signed strength
    and its warp's matrix (the identity but for geometric ops), in float32 as the feed carries it."""
    matrix = _geometry(name, magnitude, height, width) if name in GEOMETRIC else IDENTITY
    return OPERATIONS.index(name), magnitude, matrix.astype(np.float32).astype(np.float64)


GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
NO_POSTERIZE, NO_SOLARIZE = 99.0, 2.0  # more bits than any pixel type has; above full scale


def _lowering_params(name: str, magnitude: float) -> tuple[float, ...]:
    """What DALI's lowering needs beyond the matrix, every op of the list being run on every sample
    and left as it is where it is not this sample's: blend factor, (luma, mean, smoothed) weights,
    posterize bits, solarize threshold (fraction of full scale), autocontrast, equalize, clamp."""
    factor, weights = 1.0, (0.0, 0.0, 0.0)
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        factor = 1.0 + magnitude
        weights = {"Brightness": (0.0, 0.0, 0.0), "Color": (1.0, 0.0, 0.0), "Contrast": (0.0, 1.0, 0.0),
                   "Sharpness": (0.0, 0.0, 1.0)}[name]
    bits = float(int(magnitude)) if name == "Posterize" else NO_POSTERIZE
    threshold = magnitude if name == "Solarize" else 0.0 if name == "Invert" else NO_SOLARIZE
    clamps = name in ("Brightness", "Color", "Contrast", "Sharpness", "AutoContrast")
    return (factor, *weights, bits, threshold, float(name == "AutoContrast"), float(name == "Equalize"), float(clamps))


def augment(image: np.ndarray, name: str, magnitude: float, fill: float = 0.0) -> np.ndarray:
    """One of ``AUGMENTATIONS`` on an HWC image at ``magnitude`` (torchvision's ``_apply_op``).

    On 8-bit images the per-value ops (brightness, contrast, solarize, autocontrast, equalize) are
    their formula worked out once for each of the 256 values, then one OpenCV table lookup (the
    same float32 arithmetic, so the same pixels: 224 px RGB, autocontrast 2.9 ms -> ~0.1)."""
    if name == "Identity":
        return image
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        return warp(image, _geometry(name, magnitude, *image.shape[:2]), fill, "nearest")
    if name == "Posterize":
        return _posterize(image, int(magnitude))
    if name == "Solarize":
        return _solarize(image, magnitude)
    if name == "Invert":  # solarize at 0 (what DALI's lowering runs): every value of an unsigned or 0..1 image
        return _solarize(image, 0.0)
    if name == "AutoContrast":
        return _autocontrast(image)
    if name == "Equalize":
        return _equalize(image)
    return _blended(image, name, 1.0 + magnitude)


def _geometry(name: str, magnitude: float, height: int, width: int) -> np.ndarray:
    """The output -> source matrix of a geometric op: shears about the top-left corner (torchvision's
    ``center=[0, 0]``: the corner of pixel 0, at -0.5 in pixel-centre coordinates), shifts by whole
    pixels, rotations about the centre, counter-clockwise (``F.rotate``)."""
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    if name == "ShearX":
        return inverse_matrix((-0.5, -0.5), 0.0, (0, 0), 1.0, (math.degrees(math.atan(magnitude)), 0.0))
    if name == "ShearY":
        return inverse_matrix((-0.5, -0.5), 0.0, (0, 0), 1.0, (0.0, math.degrees(math.atan(magnitude))))
    if name == "TranslateX":
        return inverse_matrix(centre, 0.0, (int(magnitude), 0), 1.0, (0.0, 0.0))
    if name == "TranslateY":
        return inverse_matrix(centre, 0.0, (0, int(magnitude)), 1.0, (0.0, 0.0))
    return inverse_matrix(centre, -magnitude, (0, 0), 1.0, (0.0, 0.0))


def _finished(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float results clamped to the type's range and cast as torch's ``.to`` does (truncated)."""
    return np.clip(values, 0.0, max_value(dtype)).astype(dtype)


def _looked_up(image: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """An 8-bit image through ``tables`` (256 values, or 256 x channels: one table a channel)."""
    channels = image.shape[2]
    if tables.ndim == 1 or channels <= 4:
        table = tables if tables.ndim == 1 else np.ascontiguousarray(tables).reshape(256, 1, channels)
        return cv2.LUT(np.ascontiguousarray(image), table).reshape(image.shape)
    return np.stack([cv2.LUT(np.ascontiguousarray(image[..., c]), np.ascontiguousarray(tables[:, c]))
                     for c in range(channels)], axis=-1)


def _luma(x: np.ndarray) -> np.ndarray:
    """torchvision's grayscale (0.2989 R + 0.587 G + 0.114 B) of a float32 RGB image, HxW."""
    return cv2.transform(np.ascontiguousarray(x), _LUMA).reshape(x.shape[:2])


def _blended(image: np.ndarray, name: str, factor: float) -> np.ndarray:
    """Brightness, Color, Contrast, Sharpness: ``image * factor + other * (1 - factor)``, where the
    other image is black, the luma, the luma's mean, or the image smoothed (torchvision's ``_blend``)."""
    f, g = np.float32(factor), np.float32(1.0 - factor)
    eight = image.dtype == np.uint8
    if name == "Brightness":
        return _looked_up(image, _finished(_VALUES * f, image.dtype)) if eight else _finished(image * f, image.dtype)
    if name == "Color" and image.shape[2] != 3:
        return image
    x = image.astype(np.float32)
    integer = image.dtype.kind in "ui"
    if name == "Color":  # M x, M = f I + (1 - f) [luma weights in each row]: one OpenCV pass
        return _finished(cv2.transform(x, f * np.eye(3, dtype=np.float32) + g * _LUMA[:, :3].repeat(3, 0)), image.dtype)
    if name == "Contrast":
        gray = _luma(x) if image.shape[2] == 3 else x
        mean = (np.floor(gray) if integer and image.shape[2] == 3 else gray).mean(dtype=np.float32)
        if eight:
            return _looked_up(image, _finished(_VALUES * f + mean * g, image.dtype))
        return _finished(x * f + mean * g, image.dtype)
    height, width = image.shape[:2]  # Sharpness: the inner pixels blended with their 3x3 smoothing
    if height <= 2 or width <= 2:
        return image
    smooth = cv2.filter2D(x, -1, _SHARPEN, borderType=cv2.BORDER_REPLICATE).reshape(x.shape)
    if integer:
        np.rint(smooth, out=smooth)
    # whole contiguous planes in one OpenCV pass (the inner view's NumPy arithmetic was ~2x slower),
    # then the border put back: torchvision blends the inner pixels only
    out = cv2.addWeighted(x, float(f), smooth, float(g), 0.0).reshape(x.shape)
    out[0], out[-1], out[:, 0], out[:, -1] = x[0], x[-1], x[:, 0], x[:, -1]
    return _finished(out, image.dtype)


def _posterize(image: np.ndarray, bits: int) -> np.ndarray:
    if image.dtype.kind == "f":
        levels = 1 << bits
        return (np.clip(np.floor(image * levels), 0, levels - 1) / levels).astype(image.dtype)
    value_bits = np.iinfo(image.dtype).bits - (1 if image.dtype.kind == "i" else 0)
    if bits >= value_bits:
        return image
    return image & image.dtype.type(((1 << bits) - 1) << (value_bits - bits))


def _solarize(image: np.ndarray, magnitude: float) -> np.ndarray:
    """Values at or above ``magnitude`` of full scale inverted (the threshold in float32, as DALI's
    lowering computes it)."""
    return solarized(image, np.float32(max_value(image.dtype)) * np.float32(magnitude))


def _autocontrast(image: np.ndarray) -> np.ndarray:
    """Each channel stretched from its own min..max to the full scale (a flat channel kept)."""
    full = max_value(image.dtype)
    low, high = _channel_ranges(image)
    flat = high == low
    scale = np.where(flat, 1.0, (high - low) * np.float32(1.0 / full)).astype(np.float32)
    low = np.where(flat, 0.0, low).astype(np.float32)
    if image.dtype == np.uint8:
        return _looked_up(image, _finished((_VALUES[:, None] - low) / scale, image.dtype))
    return _finished((image.astype(np.float32) - low) / scale, image.dtype)


def _channel_ranges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's min and max, float32 (OpenCV's minMaxLoc on each plane: NumPy's reduction
    across interleaved 8-bit channels took 1.6 ms for 224 px RGB)."""
    if image.dtype in (np.uint8, np.uint16, np.int16, np.float32):
        ranges = [cv2.minMaxLoc(plane)[:2] for plane in cv2.split(np.ascontiguousarray(image))]
        low, high = zip(*ranges)
        return np.array(low, np.float32), np.array(high, np.float32)
    values = image.reshape(-1, image.shape[2])
    return values.min(axis=0).astype(np.float32), values.max(axis=0).astype(np.float32)


def _equalize(image: np.ndarray) -> np.ndarray:
    """PIL's (and torchvision's) histogram equalization of each channel, on 8 bits: 16-bit images
    through their top 8 bits, float images through ``x * 256`` (torchvision's conversions)."""
    if image.dtype == np.uint8:
        planes = image if image.flags.c_contiguous else np.ascontiguousarray(image)
        hists = [cv2.calcHist([planes], [c], None, [256], [0, 256]).ravel().astype(np.int64)
                 for c in range(image.shape[2])]
        return _looked_up(image, np.stack([_equalized_table(hist) for hist in hists], axis=-1))
    if image.dtype == np.uint16:
        return _equalize((image >> 8).astype(np.uint8)).astype(np.uint16) << 8
    if image.dtype.kind == "f":
        eight = (image * (256.0 - 1e-3)).astype(np.uint8)
        return (_equalize(eight) / np.float32(255)).astype(image.dtype)
    return image  # other integer types: no 8-bit conversion torchvision defines


def _equalized_table(hist: np.ndarray) -> np.ndarray:
    """PIL's equalization table of a channel's 256-bin histogram (the identity where the channel
    has one value, or all but a few pixels at its maximum)."""
    cumulative = np.cumsum(hist)
    step = (cumulative[-1] - hist[int(np.argmax(cumulative))]) // 255  # pixels below the channel's own maximum
    if step == 0:
        return np.arange(256, dtype=np.uint8)
    return np.concatenate([[0], np.clip((cumulative[:-1] + step // 2) // step, 0, 255)]).astype(np.uint8)
