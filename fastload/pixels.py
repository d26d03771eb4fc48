"""Pixel helpers shared by packing, the ops and both backends (NumPy only: the feed and pack
workers must not import torch, and nothing here imports from above).

* The one pixel type a store's images are brought to before their ops run, and the conversion
  to it: the same in both backends, the batch stage and the feed workers.
* What 'full intensity' means for a pixel type (``max_value``).
* Pixel-type round trips and OpenCV's channel limits (``restore_dtype``, ``by_channel_chunks``),
  for the ops and for pack's resize.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["pixel_dtype", "to_pixel_dtype", "max_value", "restore_dtype", "by_channel_chunks",
           "CV_MAX_CHANNELS"]

# Some OpenCV calls (warpAffine, remap, ...) take at most 4 channels, and warpAffine gives
# wrong values for 2-channel images (measured with OpenCV 4.x/5.0: off by up to 2% of range).
CV_MAX_CHANNELS = 4


def pixel_dtype(store: Any) -> np.dtype:
    """The one pixel type every image of ``store`` is brought to before its ops run, in both
    backends: float32 if any record is float32 or 32-bit integer (neither OpenCV's nor DALI's
    resize takes those), else uint16 if any is 16-bit, else uint8 (else the store's only type,
    such as int16 Hounsfield units). A store that mixes 8- and 16-bit images is read as 16-bit."""
    dtypes = set(store.header.dtypes) or {"uint8"}  # a sharded store's header has every shard's
    if dtypes & {"int32", "uint32"}:
        return np.dtype("float32")
    for name in ("float32", "uint16", "uint8"):
        if name in dtypes:
            return np.dtype(name)
    return np.dtype(sorted(dtypes)[0])


def to_pixel_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``image`` in ``dtype``, keeping what its values mean: an unsigned integer image is scaled
    by the full ranges (8-bit 255 -> 16-bit 65535, as DALI's decoders do; to float: 0..1), so a
    Normalize by the pixel type's range treats every image of a mixed store alike. Anything else
    (signed values such as Hounsfield units, floats) is cast as it is."""
    source, dtype = image.dtype, np.dtype(dtype)
    if source == dtype:
        return image
    if source.kind == "u" and dtype.kind == "u":
        scale = np.iinfo(dtype).max / np.iinfo(source).max
        if scale >= 1:
            return image.astype(dtype) * dtype.type(round(scale))  # 257: exact for 8 -> 16 bit
        return np.round(image * scale).astype(dtype)
    if source.kind == "u" and dtype.kind == "f":
        return image.astype(dtype) / dtype.type(np.iinfo(source).max)
    return image.astype(dtype)


def max_value(dtype: np.dtype) -> float:
    """The value that means 'full intensity' for a pixel type (1.0 for floats)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


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
