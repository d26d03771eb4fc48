"""A torchvision transform pipeline as fastload ops: the training script's own ``transforms.Compose``
passed as ``Loader(augment=...)`` (torchvision.transforms and transforms.v2 alike).

What does not carry over is refused with the transform named and what to do, never dropped
silently, but for the conversions fastload does itself (``ToTensor``, ``ToImage``, ``ToDtype``,
``PILToTensor``, ``ConvertImageDtype``: the Loader's output is a float tensor, ``output_dtype=``
picks another). Resizes are fastload's antialiased bilinear whatever ``interpolation`` says; the
colour jitter's four adjustments run in a fixed order (brightness, contrast, saturation, hue), not
torchvision's random one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from .affine import RandomAffine
from .autoaugment import (
    AutoAugment,
    RandAugment,
    RandomAdjustSharpness,
    RandomAutocontrast,
    RandomEqualize,
    RandomInvert,
    RandomPosterize,
    TrivialAugmentWide,
)
from .base import Op
from .blur import GaussianBlur
from .color import ColorJitter, RandomGrayscale, RandomSolarize
from .geometry import CenterCrop, Flip, RandomCrop, RandomResizedCrop, Resize
from .library import RandomErasing
from .normalize import Normalize

__all__ = ["from_torchvision", "is_torchvision_transform"]

_CONVERSIONS = ("ToTensor", "PILToTensor", "ToImage", "ToDtype", "ConvertImageDtype", "ToPureTensor")


def is_torchvision_transform(value: Any) -> bool:
    """Whether ``value`` is a torchvision transform (or a Compose of them)."""
    return type(value).__module__.startswith("torchvision.transforms")


def from_torchvision(transform: Any) -> list[Op]:
    """The fastload ops doing what ``transform`` (a torchvision transform or ``Compose``) does.

    Example::

        train = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                    transforms.TrivialAugmentWide(), transforms.ToTensor(),
                                    transforms.Normalize(mean, std), transforms.RandomErasing(0.25)])
        loader = fastload.Loader("train.lmdb", batch_size=256, augment=ops.from_torchvision(train))

    Raises:
        ValueError: a transform with no fastload counterpart (named, with what to do instead).
    """
    ops: list[Op] = []
    scaled = False  # after ToTensor & co, values are 0..1: RandomSolarize's threshold is then a fraction
    for step in _flattened(transform):
        if type(step).__name__ in _CONVERSIONS:
            scaled = True
            continue
        converter = _CONVERTERS.get(type(_unwrap(step)[0]).__name__)
        if converter is None:
            raise ValueError(f"torchvision's {step!r} has no fastload counterpart; supported: "
                             f"{', '.join(sorted([*_CONVERTERS, 'Compose', 'RandomApply', *_CONVERSIONS]))}. "
                             "Write it as a fastload op (fastload.op: a function of one HWC NumPy image) and "
                             "put it in the list in its place")
        ops.append(converter(step, scaled))
    return ops


def _flattened(transform: Any, p: float = 1.0) -> list[Any]:
    """Compose's steps in order; RandomApply's one step with its probability set on it."""
    name = type(transform).__name__
    if name == "Compose":
        return [step for inner in transform.transforms for step in _flattened(inner, p)]
    if name == "RandomApply":
        inner = list(transform.transforms)
        if len(inner) != 1 or type(inner[0]).__name__ not in _WITH_P:
            raise ValueError(f"torchvision's {transform!r}: fastload applies one ColorJitter, GaussianBlur, "
                             "RandomSolarize or RandomGrayscale with a probability (p=); give each its own "
                             "RandomApply")
        return [_Applied(inner[0], transform.p * p)]
    return [transform]


class _Applied:
    """A transform inside RandomApply: converted with its probability."""

    def __init__(self, inner: Any, p: float) -> None:
        self.inner, self.p = inner, p

    def __repr__(self) -> str:
        return f"RandomApply({self.inner!r}, p={self.p})"


def _unwrap(step: Any) -> tuple[Any, float]:
    return (step.inner, step.p) if isinstance(step, _Applied) else (step, 1.0)


def _pair_or_none(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def _interpolation(step: Any) -> str:
    mode = getattr(getattr(step, "interpolation", None), "value", "nearest")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"torchvision's {step!r}: fastload's warps read 'nearest' or 'bilinear', not {mode!r}")
    return mode


def _fill(step: Any) -> float:
    fill = getattr(step, "fill", 0)
    if fill is None:
        return 0.0
    if isinstance(fill, (int, float)):
        return float(fill)
    values = {float(v) for v in fill}
    if len(values) != 1:
        raise ValueError(f"torchvision's {step!r}: fastload fills every channel with one value, not {fill!r}")
    return values.pop()


def _size(size: Any) -> int | tuple[int, int]:
    """torchvision's size (an int, one value or (h, w)) as fastload writes it: an int for a square."""
    if isinstance(size, int):
        return size
    if len(size) == 1 or int(size[0]) == int(size[1]):
        return int(size[0])
    return int(size[0]), int(size[1])


def _resize(step: Any, scaled: bool) -> Op:
    if getattr(step, "max_size", None) is not None:
        raise ValueError(f"torchvision's {step!r}: max_size has no fastload counterpart; resize the shorter side "
                         "(Resize(size=int)) or to an exact size")
    size = step.size
    if isinstance(size, int) or len(size) == 1:  # one number: the shorter side
        return Resize(shorter=int(size if isinstance(size, int) else size[0]))
    return Resize(size=(int(size[0]), int(size[1])))  # (h, w), square or not: exactly that size


def _random_crop(step: Any, scaled: bool) -> Op:
    padding = step.padding if step.padding is not None else 0
    padding = padding if isinstance(padding, int) else tuple(int(v) for v in padding)
    return RandomCrop(_size(step.size), padding=padding, pad_if_needed=bool(step.pad_if_needed), fill=_fill(step),
                      padding_mode=step.padding_mode)


def _color_jitter(step: Any, scaled: bool) -> Op:
    jitter, p = _unwrap(step)
    ranges = {k: _pair_or_none(getattr(jitter, k)) for k in ("brightness", "contrast", "saturation", "hue")}
    kwargs = {k: v for k, v in ranges.items() if v is not None}
    return ColorJitter(**kwargs, p=p)


def _rotation(step: Any, scaled: bool) -> Op:
    if step.expand or step.center is not None:
        raise ValueError(f"torchvision's {step!r}: fastload rotates about the centre keeping the size "
                         "(expand=False, center=None)")
    low, high = (float(v) for v in step.degrees)
    # torchvision's rotation is counter-clockwise, RandomAffine's angle clockwise (as its affine)
    return RandomAffine(degrees=(-high, -low), fill=_fill(step), interpolation=_interpolation(step))


def _affine(step: Any, scaled: bool) -> Op:
    if getattr(step, "center", None) is not None:
        raise ValueError(f"torchvision's {step!r}: fastload's RandomAffine turns about the centre (center=None)")
    shear = None if step.shear is None else tuple(float(v) for v in step.shear)
    return RandomAffine(degrees=_pair_or_none(step.degrees) or 0.0, translate=_pair_or_none(step.translate),
                        scale=_pair_or_none(step.scale), shear=shear, fill=_fill(step),
                        interpolation=_interpolation(step))


def _blur(step: Any, scaled: bool) -> Op:
    blur, p = _unwrap(step)
    return GaussianBlur(sigma=_pair_or_none(blur.sigma), p=p)


def _grayscale(step: Any, scaled: bool) -> Op:
    gray, p = _unwrap(step)
    return RandomGrayscale(p=gray.p * p)


def _to_gray(step: Any, scaled: bool) -> Op:
    if step.num_output_channels != 3:
        raise ValueError(f"torchvision's {step!r}: fastload keeps the channel count through the ops (a store "
                         "of grayscale images gives 1-channel batches); for RGB images keep three channels "
                         "with Grayscale(num_output_channels=3)")
    return RandomGrayscale(p=1.0)


def _solarize(step: Any, scaled: bool) -> Op:
    solarize, p = _unwrap(step)
    threshold = float(solarize.threshold) if scaled else float(solarize.threshold) / 255.0  # PIL: 8-bit units
    return RandomSolarize(threshold=threshold, p=solarize.p * p)


def _policy(step: Any, scaled: bool) -> Op:
    if _interpolation(step) != "nearest":
        raise ValueError(f"torchvision's {step!r}: fastload's policies read nearest pixels, as torchvision's default")
    name, fill = type(step).__name__, _fill(step)
    if name == "TrivialAugmentWide":
        return TrivialAugmentWide(num_magnitude_bins=step.num_magnitude_bins, fill=fill)
    if name == "RandAugment":
        return RandAugment(num_ops=step.num_ops, magnitude=step.magnitude, num_magnitude_bins=step.num_magnitude_bins,
                           fill=fill)
    return AutoAugment(policy=getattr(step.policy, "value", step.policy), fill=fill)


def _erasing(step: Any, scaled: bool) -> Op:
    value = "random" if step.value is None else step.value  # v2 keeps value="random" as None
    if isinstance(value, (list, tuple)):
        values = {float(v) for v in value}
        if len(values) != 1:
            raise ValueError(f"torchvision's {step!r}: fastload erases with one value for every channel or 'random'")
        value = values.pop()
    return RandomErasing(p=step.p, scale=tuple(step.scale), ratio=tuple(step.ratio),
                         value="random" if value == "random" else float(value))


_CONVERTERS: Mapping[str, Callable[[Any, bool], Op]] = MappingProxyType({
    "RandomResizedCrop": lambda s, _: RandomResizedCrop(_size(s.size), scale=tuple(s.scale), ratio=tuple(s.ratio)),
    "Resize": _resize,
    "CenterCrop": lambda s, _: CenterCrop(_size(s.size)),
    "RandomCrop": _random_crop,
    "RandomHorizontalFlip": lambda s, _: Flip(horizontal=True, vertical=False, p=float(s.p)),
    "RandomVerticalFlip": lambda s, _: Flip(horizontal=False, vertical=True, p=float(s.p)),
    "RandomRotation": _rotation,
    "RandomAffine": _affine,
    "ColorJitter": _color_jitter,
    "RandomGrayscale": _grayscale,
    "Grayscale": _to_gray,
    "GaussianBlur": _blur,
    "RandomSolarize": _solarize,
    "TrivialAugmentWide": _policy,
    "RandAugment": _policy,
    "AutoAugment": _policy,
    "Normalize": lambda s, _: Normalize(mean=tuple(float(v) for v in s.mean), std=tuple(float(v) for v in s.std)),
    "RandomErasing": _erasing,
    "RandomEqualize": lambda s, _: RandomEqualize(p=float(s.p)),
    "RandomAutocontrast": lambda s, _: RandomAutocontrast(p=float(s.p)),
    "RandomInvert": lambda s, _: RandomInvert(p=float(s.p)),
    "RandomPosterize": lambda s, _: RandomPosterize(bits=int(s.bits), p=float(s.p)),
    "RandomAdjustSharpness": lambda s, _: RandomAdjustSharpness(sharpness_factor=float(s.sharpness_factor), p=float(s.p)),
})
_WITH_P = ("ColorJitter", "GaussianBlur", "RandomSolarize", "RandomGrayscale")
