"""Small DALI building blocks shared by the operators' ``dali()`` methods.

Imported only inside ``dali()`` (DALI is an optional extra). Every random draw is one DALI
random operator, seeded from the pipeline's seed, so a pipeline replays from the loader's seed.
"""

from __future__ import annotations

from typing import Any

from nvidia.dali import fn, types

__all__ = ["uniform", "coin", "as_float", "like"]


def uniform(low: float, high: float) -> Any:
    """One float per sample, uniform in [low, high] (a constant when low == high)."""
    if high < low:
        raise ValueError(f"empty range [{low}, {high}]")
    if high == low:  # DALI refuses an empty range; a one-value set gives the same constant
        return fn.random.uniform(values=[float(low)])
    return fn.random.uniform(range=[float(low), float(high)])


def coin(p: float) -> Any:
    """One 0/1 int per sample, 1 with probability ``p``."""
    return fn.random.coin_flip(probability=float(p))


def as_float(images: Any) -> Any:
    """Cast to float32: DALI's CPU rotate and brightness_contrast refuse uint16."""
    return fn.cast(images, dtype=types.FLOAT)


def like(result: Any, original: Any) -> Any:
    """Cast back to the original pixel type (DALI rounds and saturates, as the NumPy path does)."""
    return fn.cast_like(result, original)
