"""The op list a Loader runs, from its ``augment=`` argument: a preset name, a config file or ops."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..config_files import is_config_path
from .base import Op
from .config import from_config
from .convert import from_torchvision, is_torchvision_transform
from .presets import preset

__all__ = ["resolve_ops", "store_mean_std"]


def resolve_ops(augment: str | Sequence[Op] | Any | None, image_size: int, mean: Any, std: Any) -> list[Op]:
    """The ops of ``augment``: None (no ops), a preset ("train", "eval"), a JSON/YAML op list,
    a sequence of fastload ops, or a torchvision transform pipeline (``from_torchvision``)."""
    if augment is None:
        return []
    if is_torchvision_transform(augment):
        return from_torchvision(augment)
    if isinstance(augment, (str, os.PathLike)):
        text = os.fspath(augment)
        if is_config_path(text):
            return from_config(text)
        return preset(text, image_size, mean, std)
    ops = list(augment)
    for op in ops:
        if not isinstance(op, Op):
            raise TypeError(f"augment entries must be fastload ops, got {op!r}")
    return ops


def store_mean_std(store: Any) -> tuple[Any, Any]:
    """The pixel statistics gathered when ``store`` was packed (``mean="store"``)."""
    stats = store.header.stats
    if not stats.get("mean"):
        raise ValueError(f"{store.path} has no pixel statistics; pass mean=/std= explicitly")
    return tuple(stats["mean"]), tuple(stats["std"])
