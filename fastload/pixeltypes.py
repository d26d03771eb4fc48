"""The one pixel type a store's images are brought to before their ops run, and the conversion
to it: the same in both backends, the batch stage and the feed workers (which must not import
torch: this module does not)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["pixel_dtype", "to_pixel_dtype"]


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
