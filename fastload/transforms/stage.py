"""The batch stage: the user's batch transforms (mixup, cutmix, erasing, ...) on each finished
batch, on the loader's device.

The batch comes finished (``fastload.output``: dtype, layout, normalization, made by the
backend); each transform runs with a ``torch.Generator`` seeded from ``(seed, epoch, batch)``,
so a run replays exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .base import batch_generator

__all__ = ["BatchStage"]


class BatchStage:
    """Runs the batch transforms on each batch.

    Args:
        transforms: batch transforms ``f(images, labels, rng) -> (images, labels)``.
        seed: the loader's seed (rank included).
        layout: the batches' layout, "NCHW" or "NHWC" (told to the built-in transforms).
    """

    def __init__(self, *, transforms: Sequence[Callable[..., Any]], seed: int, layout: str) -> None:
        self.transforms = [_bind_layout(t, layout) for t in transforms]
        self.seed = seed

    @property
    def active(self) -> bool:
        return bool(self.transforms)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: int,
                 batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        for salt, transform in enumerate(self.transforms):
            rng = batch_generator(self.seed, epoch, batch, salt, images.device)
            images, labels = transform(images, labels, rng)
        return images, labels


def _bind_layout(transform: Callable[..., Any], layout: str) -> Callable[..., Any]:
    """Tell a built-in transform the batch's layout (a guess from the shape fails for tiny
    images or many channels)."""
    if dataclasses.is_dataclass(transform) and getattr(transform, "layout", "") is None:
        return dataclasses.replace(transform, layout=layout)  # type: ignore[type-var]
    return transform
