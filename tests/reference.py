"""Reference arithmetic the tests compare fastload's kernels with."""

from __future__ import annotations

import numpy as np

from fastload.ops.normalize import scale_shift


def normalized(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per channel (channels last, pixel units) as the output stage computes
    it: ``x * a + b`` rounded once to float32 (float64 holds the exact value for 8- and 16-bit
    pixels), with ``a``/``b`` from ``scale_shift``."""
    a, b = scale_shift(mean, std)
    return (np.asarray(images, np.float64) * a.astype(np.float64) + b.astype(np.float64)).astype(np.float32)
