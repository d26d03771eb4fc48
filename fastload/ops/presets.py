"""The named augmentation presets: ``train`` and ``eval``."""

from __future__ import annotations

from .base import Op
from .geometry import CenterCrop, Flip, RandomResizedCrop, Resize
from .normalize import Normalize

__all__ = ["preset", "PRESETS", "EVAL_CROP_FRACTION"]

# Eval resizes the shorter side to size / 0.875 (256 for 224), then center-crops, as ImageNet
# recipes do.
EVAL_CROP_FRACTION = 0.875


def train(size: int, mean=None, std=None) -> list[Op]:
    return [RandomResizedCrop(size), Flip(horizontal=True), Normalize(mean, std)]


def eval_(size: int, mean=None, std=None) -> list[Op]:
    return [Resize(shorter=int(round(size / EVAL_CROP_FRACTION))), CenterCrop(size), Normalize(mean, std)]


PRESETS = {"train": train, "eval": eval_}


def preset(name: str, size: int, mean=None, std=None) -> list[Op]:
    """The op list of preset ``name`` ("train" or "eval") for output ``size``."""
    if name not in PRESETS:
        raise ValueError(f"unknown augment preset {name!r}; choose one of {sorted(PRESETS)} or pass a list of ops")
    return PRESETS[name](size, mean, std)
