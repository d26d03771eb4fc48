"""Pixel helpers shared by packing, the ops and both backends (NumPy only: the feed and pack
workers must not import torch, and nothing here imports from above).

* The one pixel type a store's images are brought to before their ops run, and the conversion
  to it: the same in both backends, the batch stage and the feed workers.
* What 'full intensity' means for a pixel type (``max_value``).
* Pixel-type round trips and OpenCV's channel limits (``restore_dtype``, ``by_channel_chunks``),
  for the ops and for pack's resize.
* Interleaved pixels into channel planes (``to_planes``) and the normalize's per-plane
  ``x * scale + shift`` as one fused multiply-add (``affine_planes``), in OpenCV's SIMD kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["pixel_dtype", "to_pixel_dtype", "max_value", "restore_dtype", "by_channel_chunks",
           "to_planes", "planes_of", "affine_planes", "CV_MAX_CHANNELS", "CV_MAX_MAT_CHANNELS", "CV_TYPES"]

# Some OpenCV calls (warpAffine, remap, ...) take at most 4 channels, and warpAffine gives
# wrong values for 2-channel images (measured with OpenCV 4.x/5.0: off by up to 2% of range).
CV_MAX_CHANNELS = 4
# The channels one of OpenCV's arrays can have at all (CV_CN_MAX).
CV_MAX_MAT_CHANNELS = 512
# The pixel types OpenCV's matrices hold (CV_8U .. CV_64F).
CV_TYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64))


def to_planes(samples: np.ndarray, planes: np.ndarray, *, read_next: bool = False) -> np.ndarray:
    """Copy ``...xHxWxC`` ``samples`` into ``planes`` (``...xCxHxW``, the same leading shape and
    type); returns ``planes``. ``read_next``: the caller reads the planes right away.

    Why not ``planes[...] = np.moveaxis(samples, -1, -3)``: NumPy copies interleaved pixels into
    planes one element at a time (224 px RGB uint8: 40 us a sample, 6-channel uint16 85 us).
    OpenCV's ``mixChannels`` takes 30 and 72 us; its ``split`` 11-23 us for 8-bit samples, but
    what it writes reads back slowly (a pass over it right after: 95 us instead of 22), so it
    serves where the planes are read later (a batch being staged: the host stage took 220 us a
    224 px sample with it, 245 with mixChannels), mixChannels where they are read at once. Planes
    OpenCV cannot write in place (rows not contiguous), or types it lacks, go through NumPy."""
    if _splittable(samples, planes):
        cv2 = _cv2()
        split = samples.dtype == np.uint8 and not read_next
        pairs = [] if split else [i for c in range(samples.shape[-1]) for i in (c, c)]
        # one sample's planes go as the CxHxW array itself (OpenCV takes it as C planes: ~0.5 us of
        # Python less than a list of them, once per sample in the host stage)
        for source, targets in [(samples, planes)] if samples.ndim == 3 else _blocks(samples, planes):
            if split:
                cv2.split(source, targets)
            else:
                cv2.mixChannels([source], targets, pairs)
    else:
        planes[...] = np.moveaxis(samples, -1, -3)
    return planes


def _blocks(samples: np.ndarray, planes: np.ndarray) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """``(source, one target per channel)`` pairs for OpenCV: a batch whose samples and planes
    lie whole goes in one call (a sample a row of H x W pixels: one call's Python a batch, not a
    sample's, as the writer finishes a block of interleaved samples), else a sample at a time."""
    height, width, channels = samples.shape[-3:]
    if samples.ndim in (3, 4) and samples.strides[-3] == samples.strides[-2] * width and _whole_planes(planes):
        rows = planes.reshape(-1, channels, height * width)  # views: the planes were checked whole
        return [(samples.reshape(-1, height * width, channels), [rows[:, c] for c in range(channels)])]
    return [(samples[index], list(planes[index])) for index in np.ndindex(*samples.shape[:-3])]


def planes_of(samples: np.ndarray) -> np.ndarray:
    """The ``...xCxHxW`` channel planes of ``...xHxWxC`` ``samples``: a view where each plane's rows
    lie whole already (one channel; a planar image seen channels last), else a copy
    (``to_planes``)."""
    planes = np.moveaxis(samples, -1, -3)
    if _whole_planes(planes):
        return planes
    return to_planes(samples, np.empty(planes.shape, samples.dtype), read_next=True)


def _whole_planes(x: np.ndarray) -> bool:
    """Whether every plane of ``...xHxW`` ``x`` has contiguous rows, and leading axes run forward."""
    return x.strides[-1] == x.itemsize and x.strides[-2] == x.itemsize * x.shape[-1] and all(
        stride > 0 for stride in x.strides[:-2])


def _splittable(samples: np.ndarray, planes: np.ndarray) -> bool:
    # each attribute read once: this runs for every sample of the host stage, under the GIL
    dtype, shape, strides, targets = samples.dtype, samples.shape, samples.strides, planes.strides
    if dtype != planes.dtype or dtype not in CV_TYPES or len(shape) < 3:
        return False
    channels, item = shape[-1], dtype.itemsize
    return (1 < channels <= CV_MAX_MAT_CHANNELS and strides[-1] == item and strides[-2] == item * channels
            and strides[-3] > 0 and targets[-1] == item and targets[-2] > 0
            and planes.shape == (*shape[:-3], channels, *shape[-3:-1]))


# Where OpenCV's addWeighted is one fused multiply-add per element: these inputs are exact in
# float32 (int32 would be rounded first), and rows of at least this many elements run its vector
# loop (shorter ones a scalar loop, which rounds twice)
_AFFINE_TYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.float32))
_AFFINE_MIN_ROW = 64


def affine_planes(planes: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = planes * scale + shift`` with one ``scale``/``shift`` per channel plane (float32
    values), for ``CxHxW`` or ``NxCxHxW`` ``planes`` of any pixel type into float32 ``out`` of
    the same shape; returns ``out``. Each element is one fused multiply-add in float32 (a single
    rounding), as ``torch.addcmul`` computes it on the CPU (checked with AVX-512; OpenCV and torch
    use the FMA instruction wherever the CPU has one): the output stage's normalize, the same bits
    on every CPU path.

    Why: NumPy has no fused multiply-add, and the normalize it made of three passes (cast,
    subtract, divide) cost 71 us a 224 px RGB sample, ~10% of the DALI train preset's CPU time;
    OpenCV's ``addWeighted`` (``x * scale + x * 0 + shift``) over each channel's rows of planes
    takes 27 us, and releases the GIL. Elsewhere (other types, planes of under 64 pixels, rows
    OpenCV cannot read in place) the same value in float64, exact for 8- and 16-bit pixels
    (product and sum fit in 53 bits), then rounded once."""
    channels, height, width = planes.shape[-3:]
    if _affine_rows(planes, out, height * width):
        cv2 = _cv2()
        source = planes.reshape(-1, channels, height * width)  # views: the rows were checked whole
        target = out.reshape(-1, channels, height * width)
        for c in range(channels):
            cv2.addWeighted(source[:, c], float(scale[c]), source[:, c], 0.0, float(shift[c]), dst=target[:, c],
                            dtype=cv2.CV_32F)
    else:
        per_plane = (channels, 1, 1)
        out[...] = planes.astype(np.float64) * np.asarray(scale, np.float64).reshape(per_plane) \
            + np.asarray(shift, np.float64).reshape(per_plane)
    return out


def _affine_rows(planes: np.ndarray, out: np.ndarray, row: int) -> bool:
    """Whether OpenCV takes each channel's rows of ``planes`` and ``out`` in place, in its vector loop."""
    return (planes.dtype in _AFFINE_TYPES and out.dtype == np.float32 and planes.ndim in (3, 4)
            and planes.shape == out.shape and row >= _AFFINE_MIN_ROW and _whole_planes(planes) and _whole_planes(out))


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
