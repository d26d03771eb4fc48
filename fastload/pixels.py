"""Pixel helpers shared by packing, the ops and both backends (NumPy only: the feed and pack
workers must not import torch, and nothing here imports from above).

* The one pixel type a store's images are brought to before their ops run, and the conversion
  to it: the same in both backends, the batch stage and the feed workers.
* What 'full intensity' means for a pixel type (``max_value``).
* Pixel-type round trips and OpenCV's channel limits (``restore_dtype``, ``by_channel_chunks``),
  for the ops and for pack's resize.
* Per-channel arithmetic on channels-last pixels at NumPy's full speed (``per_channel``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["pixel_dtype", "to_pixel_dtype", "max_value", "restore_dtype", "by_channel_chunks", "per_channel",
           "CV_MAX_CHANNELS", "CV_MAX_MAT_CHANNELS", "CV_TYPES"]

# Some OpenCV calls (warpAffine, remap, ...) take at most 4 channels, and warpAffine gives
# wrong values for 2-channel images (measured with OpenCV 4.x/5.0: off by up to 2% of range).
CV_MAX_CHANNELS = 4
# The channels one of OpenCV's arrays can have at all (CV_CN_MAX).
CV_MAX_MAT_CHANNELS = 512
# The pixel types OpenCV's matrices hold (CV_8U .. CV_64F).
CV_TYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64))


def per_channel(ufunc: np.ufunc, image: np.ndarray, values: np.ndarray, row: np.ndarray | None = None) -> np.ndarray:
    """``ufunc(image, values, out=image)`` with one value per channel of a channels-last
    ``...xHxWxC`` ``image``; returns ``image``. ``row``: ``values`` tiled along a row (W x C), for a
    caller that keeps it (``np.tile`` costs ~3 us a call).

    Why not broadcasting the ``C`` values: NumPy then runs its inner loop over one pixel's C
    values, ~4 ns an element: a 224 px RGB image took 200 us a pass, a 32-image NHWC batch 7.8 ms
    (NumPy 2.4, one core). Where a row's ``W x C`` values are contiguous, the row is the inner loop
    against the values tiled along it: 20 us and 0.9 ms, the same results bit for bit."""
    width, channels = image.shape[-2:]
    if image.strides[-1] != image.itemsize or image.strides[-2] != channels * image.itemsize:
        return ufunc(image, values, out=image)
    # a view (W and C are contiguous together, checked above), ~8x cheaper than as_strided
    rows = image.reshape(*image.shape[:-2], width * channels)
    if row is None:
        row = np.tile(np.asarray(values, image.dtype).ravel(), width)
    ufunc(rows, row, out=rows)
    return image


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
    """Run an OpenCV ``transform`` (one that treats each channel alone: resize, blur, warp) on
    groups of at most ``max_channels`` channels.

    Up to ``max_channels`` channels go whole (2 as two single channels). More go in groups of
    ``max_channels``, the last one overlapping the one before (6 channels: 0-3, then 2-5, keeping 4
    and 5): OpenCV's 4-channel kernels cost little more than its 1-channel ones (INTER_AREA on
    uint16, one core: 294 vs 232 us), so two 4-channel calls beat 4 + 1 + 1 (~1.7 ms for a 6-channel
    crop). OpenCV drops the channel axis of 1-channel results; it is put back here, so the result
    is always HxWxC with the input's channel count.
    """
    channels = image.shape[2]
    if channels <= max_channels:
        sizes = [1, 1] if channels == 2 else [channels]
        parts = [_run(image, start, size, transform) for start, size in zip((0, 1), sizes)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
    starts = list(range(0, channels - max_channels + 1, max_channels))
    if starts[-1] + max_channels < channels:
        starts.append(channels - max_channels)
    parts = [_run(image, start, max_channels, transform) for start in starts]
    # each output channel from the first group that holds it: (source channel over all parts, output channel)
    pairs = [(k * max_channels + c - start, c) for k, start in enumerate(starts)
             for c in range(max(start, (starts[k - 1] + max_channels) if k else 0), start + max_channels)]
    out = np.empty((*parts[0].shape[:2], channels), parts[0].dtype)
    if _mixable(out):
        _cv2().mixChannels(parts, [out], [i for pair in pairs for i in pair])
    else:
        for source, target in pairs:
            out[:, :, target] = parts[source // max_channels][:, :, source % max_channels]
    return out


def _mixable(image: np.ndarray) -> bool:
    """OpenCV can read ``image`` in place: a type of its own, pixels of whole channels, rows forward."""
    item = image.dtype.itemsize
    return (image.dtype in CV_TYPES and image.strides[2] == item and image.strides[1] == item * image.shape[2]
            and image.strides[0] > 0 and image.shape[2] <= 512)


def _run(image: np.ndarray, start: int, size: int, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``transform`` of channels ``start .. start + size``. OpenCV gathers a group out of wider pixels
    (``mixChannels``: 146 vs NumPy's 523 us for 4 of 6 uint16 channels of a 370x350 crop)."""
    if size < image.shape[2] and size > 1 and _mixable(image):
        chunk = np.empty((*image.shape[:2], size), image.dtype)
        _cv2().mixChannels([image], [chunk], [i for c in range(size) for i in (start + c, c)])
    else:
        chunk = np.ascontiguousarray(image[:, :, start : start + size])
    out = transform(chunk)
    return out.reshape(out.shape[0], out.shape[1], size)


def _cv2() -> Any:
    import cv2  # a core dependency; imported when first needed, as everywhere below the ops

    return cv2
