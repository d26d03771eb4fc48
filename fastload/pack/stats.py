"""Dataset statistics: per-image channel moments (in the workers), summed in record order into
the store's per-channel mean and std (in the parent)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..pixels import max_value

__all__ = ["moments", "Stats"]

_STATS_ROWS = 64


def moments(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and mean of squares of ``image``, in 0..1 units of its pixel type."""
    # Every k-th row (at most ~64 rows): dataset statistics for normalisation need no more,
    # and the full image would cost a fifth of the decode.
    scale = max_value(image.dtype)
    rows = image[:: max(1, image.shape[0] // _STATS_ROWS)]
    # OpenCV takes at most 4 channels at a time, and is far faster than NumPy here.
    parts = [cv2.meanStdDev(np.ascontiguousarray(rows[:, :, c : c + 4]))
             for c in range(0, rows.shape[2], 4)]
    mean = np.concatenate([m.ravel() for m, _ in parts]) / scale
    std = np.concatenate([s.ravel() for _, s in parts]) / scale
    return mean, std**2 + mean**2


class Stats:
    """Dataset-level per-channel moments, accumulated in record order (deterministic)."""

    def __init__(self) -> None:
        self.pixels = 0
        self.sums: np.ndarray | None = None
        self.sq_sums: np.ndarray | None = None
        self.mixed = False

    def add(self, mean: np.ndarray, sq_mean: np.ndarray, pixels: int) -> None:
        """One record's per-channel ``mean`` and ``sq_mean`` (from ``moments``) over ``pixels``."""
        n = pixels
        if self.sums is not None and len(mean) not in (1, len(self.sums)) and len(self.sums) != 1:
            self.mixed = True  # e.g. RGB and 6-channel records: per-channel statistics mean nothing
            return
        if self.sums is None or len(self.sums) < len(mean):
            # Grayscale counts towards every channel of a colour dataset (as the loader expands it).
            self.sums = np.broadcast_to(self.sums if self.sums is not None else 0.0, mean.shape).copy()
            self.sq_sums = np.broadcast_to(self.sq_sums if self.sq_sums is not None else 0.0, mean.shape).copy()
        self.sums += mean * n
        self.sq_sums += sq_mean * n
        self.pixels += n

    def to_json(self) -> dict[str, Any]:
        if not self.pixels or self.mixed:
            return {}
        mean = self.sums / self.pixels
        std = np.sqrt(np.maximum(self.sq_sums / self.pixels - mean**2, 0.0))
        return {"pixels": self.pixels, "mean": mean.round(6).tolist(), "std": std.round(6).tolist(),
                "units": "fraction of the dtype's maximum (0..1)"}
