"""A batch written sample by sample, in the loader's layout and dtype, with a Normalize folded in.

Shared by the batch stage (custom ops' results) and the DALI backend's host finish on the CPU
(``fastload.backends.dali.host``): both hand it HWC samples, from any thread, and get one torch tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..ops import Normalize
from ..ops.custom import CustomOpError
from ..ops.normalize import resolve_mean_std

__all__ = ["BatchWriter", "NP_DTYPES"]

NP_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}
_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
                 np.dtype(np.uint8): torch.uint8}


class BatchWriter:
    """A batch filled sample by sample (or at once) in a given layout and dtype, with a Normalize
    folded in: one pass over the pixels where torch would make four.

    The batch is a torch tensor (torch's caching allocator on the GPU, not CuPy's pool), written
    through a NumPy or CuPy view of it.

    Args:
        xp: numpy or cupy.
        device: where the batch lives.
        count: samples in the batch.
        layout: "NCHW" or "NHWC" (inputs are always HWC samples).
        dtype: the output's NumPy dtype.
        normalize: a Normalize to apply on the way, or None.
        max_value: the full scale of integer pixels (for ``normalize``).
    """

    def __init__(self, xp: Any, device: torch.device, count: int, layout: str, dtype: Any,
                 normalize: Normalize | None, max_value: float) -> None:
        self.xp, self.device, self.count, self.nchw, self.dtype = xp, device, count, layout == "NCHW", dtype
        self.normalize, self.max_value = normalize, max_value
        self.tensor: torch.Tensor | None = None
        self.array: Any = None
        self._sample_shape: tuple[int, ...] = ()
        self._mean_std: tuple[Any, Any] | None = None

    def _allocate(self, sample: Any) -> None:
        self.reserve(*sample.shape, np.dtype(sample.dtype))

    def shape(self, height: int, width: int, channels: int) -> tuple[int, ...]:
        """The output's shape for samples of ``height x width x channels``."""
        return (self.count, channels, height, width) if self.nchw else (self.count, height, width, channels)

    def reserve(self, height: int, width: int, channels: int, pixel_dtype: np.dtype,
                into: np.ndarray | None = None) -> None:
        """Allocate the output for samples of this shape and pixel type before any is written
        (then every thread may ``put`` from the start); on the CPU, ``into`` (an array of
        ``shape()`` and the output dtype) is used instead of new memory."""
        h, w, c = height, width, channels
        self._sample_shape = (h, w, c)
        if into is not None:
            self.array, self.tensor = into, torch.from_numpy(into)
        else:
            self.tensor = torch.empty(self.shape(h, w, c), dtype=_TORCH_DTYPES[np.dtype(self.dtype)],
                                      device=self.device)
            self.array = self.tensor.numpy() if self.xp is np else self.xp.from_dlpack(self.tensor)
        if self.normalize is not None:
            mean, std = resolve_mean_std(self.normalize.mean, self.normalize.std, c)
            scale = 1.0 if pixel_dtype.kind == "f" else self.max_value
            shape = (c, 1, 1) if self.nchw else (c,)
            self._mean_std = (self.xp.asarray((mean * scale).reshape(shape)),
                              self.xp.asarray((std * scale).reshape(shape)))

    def put(self, index: int, sample: Any, op: str, where: str) -> None:
        """Write one HxWxC sample (an op's result) at ``index`` (from any thread, once the first
        sample has sized the output)."""
        if self.array is None:  # the first sample (written before any other thread starts)
            self._allocate(sample)
        elif tuple(sample.shape) != self._sample_shape:
            raise CustomOpError(op, where, f"returned shape {tuple(sample.shape)} while the batch's first image "
                                f"came out {self._sample_shape}; a batch needs one size: end the augment list "
                                "with a fixed-size op (RandomResizedCrop, CenterCrop, Resize(size=...))")
        self._write(self.array[index], sample)

    def put_range(self, start: int, batch: Any) -> None:
        """Write NxHxWxC samples (any strides) at ``start``, once ``reserve`` sized the output."""
        self._write(self.array[start : start + len(batch)], batch)

    def put_batch(self, batch: Any) -> Any:
        """Write a whole NxHxWxC batch; returns the output."""
        self._allocate(batch[0])
        self._write(self.array, batch)
        return self.array

    def _write(self, target: Any, source: Any) -> None:
        xp = self.xp
        if self.nchw:
            source = xp.moveaxis(source, -1, -3)
        if self._mean_std is None:
            if target.dtype == np.uint8 and source.dtype == np.uint16:  # 16 -> 8 bit by range, as DALI's
                source = xp.rint(source * np.float32(255.0 / 65535.0))
            target[...] = source
            return
        mean, std = self._mean_std
        # (x - mean) / std in float32, as the torch backend computes it (bit for bit)
        if target.dtype == np.float32:
            xp.subtract(source, mean, out=target, dtype=np.float32)
            xp.divide(target, std, out=target)
        else:
            target[...] = xp.divide(xp.subtract(source, mean, dtype=np.float32), std)
