"""Small DALI building blocks shared by the operators' ``dali()`` methods.

Imported only inside ``dali()`` (DALI is an optional extra). Operators draw no random numbers
in DALI: their parameters arrive from the feed, drawn per sample from ``[seed, epoch, record]``.
"""

from __future__ import annotations

from typing import Any

from nvidia.dali import fn, types

__all__ = ["as_float", "as_int", "like", "on_device"]


def on_device(values: Any, ctx: Any) -> Any:
    """A CPU parameter node moved to where the images are, for arithmetic with them."""
    return values.gpu() if getattr(ctx, "device", "cpu") == "gpu" else values


def as_int(values: Any) -> Any:
    """Parameters from the feed's float32 vector as int32 (exact: they hold whole numbers)."""
    return fn.cast(values, dtype=types.INT32)


def as_float(images: Any) -> Any:
    """Cast to float32: DALI's CPU rotate and brightness_contrast refuse uint16."""
    return fn.cast(images, dtype=types.FLOAT)


def like(result: Any, original: Any) -> Any:
    """Cast back to the original pixel type (DALI rounds and saturates, as the NumPy path does)."""
    return fn.cast_like(result, original)
