"""Augmentation operators: one spec each, run by NumPy (torch backend) or DALI."""

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
from .base import REGISTRY, Op, OpError, register
from .blur import GaussianBlur
from .color import ColorJitter, RandomGrayscale, RandomSolarize
from .config import from_config, save_config, to_config
from .convert import from_torchvision
from .custom import BatchOp, CustomOp, CustomOpError, array_namespace, batch_op, op, run_numpy
from .geometry import CenterCrop, Flip, RandomCrop, RandomResizedCrop, Resize
from .library import ChannelIntensityScale, GaussianNoise, HistogramEqualization, RandomErasing
from .normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize
from .presets import preset
from .rotate import Rotate

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REGISTRY",
    "AutoAugment",
    "BatchOp",
    "CenterCrop",
    "ChannelIntensityScale",
    "ColorJitter",
    "CustomOp",
    "CustomOpError",
    "Flip",
    "GaussianBlur",
    "GaussianNoise",
    "HistogramEqualization",
    "Normalize",
    "Op",
    "OpError",
    "RandAugment",
    "RandomAdjustSharpness",
    "RandomAffine",
    "RandomAutocontrast",
    "RandomCrop",
    "RandomEqualize",
    "RandomErasing",
    "RandomGrayscale",
    "RandomInvert",
    "RandomPosterize",
    "RandomResizedCrop",
    "RandomSolarize",
    "Resize",
    "Rotate",
    "TrivialAugmentWide",
    "array_namespace",
    "batch_op",
    "from_config",
    "from_torchvision",
    "op",
    "preset",
    "register",
    "run_numpy",
    "save_config",
    "to_config",
]
