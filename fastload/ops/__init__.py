"""Augmentation operators: one spec each, run by NumPy (torch backend) or DALI."""

from .base import REGISTRY, Op, register
from .geometry import CenterCrop, Flip, RandomResizedCrop, Resize
from .normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize
from .presets import preset

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REGISTRY",
    "CenterCrop",
    "Flip",
    "Normalize",
    "Op",
    "RandomResizedCrop",
    "Resize",
    "preset",
    "register",
]
