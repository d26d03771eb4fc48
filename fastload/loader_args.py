"""The Loader's arguments checked at construction: a wrong one fails at once, saying why."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .compat import check_dataloader_kwargs
from .output import LAYOUTS, OUTPUT_DTYPES
from .transforms.base import transforms_from_config

__all__ = ["check_arguments", "resolve_transforms", "seed_of", "subset_records"]


def check_arguments(*, batch_size: Any, output_dtype: str, layout: str, hw_decoder_load: float | None,
                    shuffle: bool | None, sampler: Any, indices: Any, dataloader_kwargs: dict[str, Any]) -> None:
    """Refuse values and combinations the Loader cannot honour (DataLoader's rules included)."""
    check_dataloader_kwargs(dataloader_kwargs)
    if output_dtype not in OUTPUT_DTYPES:
        raise ValueError(f"output_dtype must be one of {sorted(OUTPUT_DTYPES)}, got {output_dtype!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if hw_decoder_load is not None and not 0.0 <= hw_decoder_load <= 1.0:
        raise ValueError(f"hw_decoder_load must lie in [0, 1], got {hw_decoder_load}")
    if batch_size is None or int(batch_size) < 1:
        raise TypeError(f"Loader() needs batch_size >= 1, got {batch_size!r} (batches are always collated)")
    if shuffle and sampler is not None and not isinstance(sampler, str):
        raise ValueError("sampler option is mutually exclusive with shuffle (as in DataLoader)")
    if indices is not None and sampler is not None and not isinstance(sampler, str):
        raise ValueError("give indices= or a sampler object, not both (a sampler names its own records)")
    if isinstance(sampler, str) and sampler != "balanced":
        raise ValueError(f"sampler must be 'balanced', a Sampler or a sequence of indices, got {sampler!r}")


def seed_of(seed: int | None, generator: torch.Generator | None) -> int:
    """``seed=``, else one taken from DataLoader's ``generator=``, else 0."""
    if seed is None:
        seed = int(generator.initial_seed()) % (1 << 62) if generator is not None else 0
    return seed


def subset_records(indices: Any, count: int) -> np.ndarray | None:
    """``indices=`` as record numbers in ``0..count-1`` (negative ones count from the end)."""
    if indices is None:
        return None
    records = np.asarray(indices, dtype=np.int64).reshape(-1)
    if records.size == 0:
        raise ValueError("indices= is empty: give at least one record index")
    bad = records[(records < -count) | (records >= count)]
    if bad.size:
        raise IndexError(f"indices= holds record {int(bad[0])}, outside 0..{count - 1} of the store")
    return records % count


def resolve_transforms(value: Any) -> list[Callable[..., Any]]:
    """``batch_transforms=``: None, a JSON/YAML file of them, or a sequence of callables."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return transforms_from_config(value)
    transforms = list(value)
    for t in transforms:
        if not callable(t):
            raise TypeError(f"batch_transforms entries are callables f(images, labels, rng), got {t!r}")
    return transforms
