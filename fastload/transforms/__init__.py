"""Batch transforms on the loader's device, after the pipeline (mixup, cutmix, random erasing).

    loader = fastload.Loader("train.lmdb", batch_size=256, augment="train", shuffle=True,
                             batch_transforms=[transforms.Mixup(alpha=0.2), transforms.RandomErasing(p=0.25)])
    for images, soft_labels in loader:     # soft_labels: (B, num_classes) float
        ...
"""

from .base import (
    TRANSFORMS,
    BatchTransform,
    batch_generator,
    register_transform,
    save_transforms,
    transforms_from_config,
    transforms_to_config,
)
from .erasing import RandomErasing
from .mix import CutMix, Mixup
from .stage import BatchStage

__all__ = [
    "TRANSFORMS",
    "BatchStage",
    "BatchTransform",
    "CutMix",
    "Mixup",
    "RandomErasing",
    "batch_generator",
    "register_transform",
    "save_transforms",
    "transforms_from_config",
    "transforms_to_config",
]
