"""NumPy helpers shared by the operators: pixel-type round trips and OpenCV channel limits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["restore_dtype", "by_channel_chunks"]

# Some OpenCV calls (warpAffine, remap, ...) take at most 4 channels, and warpAffine gives
# wrong values for 2-channel images (measured with OpenCV 4.x/5.0: off by up to 2% of range).
CV_MAX_CHANNELS = 4


def _chunk_sizes(channels: int, max_channels: int) -> list[int]:
    sizes = [max_channels] * (channels // max_channels)
    rest = channels % max_channels
    sizes += [1, 1] if rest == 2 else ([rest] if rest else [])
    return sizes


def restore_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Bring float results back to ``dtype``: integers are rounded and clipped to their range
    (as DALI's saturating casts do), floats are kept as they are."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def by_channel_chunks(image: np.ndarray, transform: Callable[[np.ndarray], np.ndarray],
                      max_channels: int = CV_MAX_CHANNELS) -> np.ndarray:
    """Run an OpenCV ``transform`` on groups of at most ``max_channels`` channels.

    Groups are 4 channels wide, a remainder of 2 goes as two single channels. OpenCV drops the
    channel axis of 1-channel results; it is put back here, so the result is always HxWxC with
    the input's channel count.
    """
    parts, start = [], 0
    for size in _chunk_sizes(image.shape[2], max_channels):
        chunk = np.ascontiguousarray(image[:, :, start : start + size])
        out = transform(chunk)
        parts.append(out.reshape(out.shape[0], out.shape[1], size))
        start += size
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
