"""Normalization: ``(x / max_value - mean) / std`` per channel, producing float32, computed as
``x * scale + shift`` (``scale_shift``) in one fused multiply-add."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..pixels import max_value
from .base import Op, register

__all__ = ["Normalize", "IMAGENET_MEAN", "IMAGENET_STD", "resolve_mean_std", "scale_shift"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_mean_std(mean: Any, std: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std in 0..1 units for ``channels`` channels.

    None means ImageNet's for 3 channels and 0.5/0.5 otherwise (use ``fastload inspect`` to
    get a dataset's own). A single number applies to every channel.
    """
    if mean is None:
        mean = IMAGENET_MEAN if channels == 3 else (0.5,)
    if std is None:
        std = IMAGENET_STD if channels == 3 else (0.5,)
    m, s = np.asarray(mean, np.float32).ravel(), np.asarray(std, np.float32).ravel()
    m = np.broadcast_to(m, (channels,)) if m.size == 1 else m
    s = np.broadcast_to(s, (channels,)) if s.size == 1 else s
    if m.shape != (channels,) or s.shape != (channels,):
        raise ValueError(f"mean/std have {m.size}/{s.size} values for {channels}-channel images")
    if (s <= 0).any():
        raise ValueError("std values must be positive")
    return m.astype(np.float32), s.astype(np.float32)


def scale_shift(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x - mean) / std`` as ``x * scale + shift``: float32 ``1 / std`` and ``-mean / std`` per
    channel (``mean``/``std`` in pixel units), each worked out in float64 and rounded once. Every
    path of the output stage, and a Normalize mid-list, applies these two as one fused
    multiply-add: the same bits everywhere, within 2e-7 of the quotient (which costs a division
    pass: 2.6x the time of the multiply-add on the CPU)."""
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return (1.0 / std64).astype(np.float32), (-mean64 / std64).astype(np.float32)


@register
@dataclass(frozen=True)
class Normalize(Op):
    """Scale to 0..1 by the pixel type's range (255 for 8-bit, 65535 for 16-bit), then
    subtract ``mean`` and divide by ``std`` (0..1 units; None: ImageNet's for RGB)."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def apply(self, image: np.ndarray, params: Any) -> np.ndarray:
        import torch  # the ops' apply runs where torch is (the host stage, the torch backend's workers)

        scale_row, shift_row = self._scaled(image.shape, image.dtype)
        # the output stage's arithmetic (fastload.output.BatchWriter), so a Normalize mid-list gives
        # what a trailing one gives: one fused multiply-add (torch.addcmul) over each row's W x C
        # values against the per-channel values tiled along a row, in place on the float32 copy:
        # 32 us a 224 px RGB sample, where NumPy's cast, subtract and divide took 66
        out = image.astype(np.float32, order="C")
        rows = torch.from_numpy(out).view(out.shape[0], out.shape[1] * out.shape[2])
        torch.addcmul(torch.from_numpy(shift_row), rows, torch.from_numpy(scale_row), out=rows)
        return out

    def _scaled(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """``scale_shift`` of mean and std times the pixel type's full scale, tiled along a row,
        kept for the last width, channel count and type: per sample they were ~20 us of Python,
        under the GIL in the CPU host stage's threads (a Normalize after a fixed-size op always
        finds them)."""
        key = (shape[1], shape[2], np.dtype(dtype))
        last = self.__dict__.get("_scaled_last")  # not a field: equality and config are unchanged
        if last is None or last[0] != key:
            mean, std = resolve_mean_std(self.mean, self.std, shape[2])
            full = np.float32(max_value(dtype))
            last = (key, *(np.tile(values, shape[1]) for values in scale_shift(mean * full, std * full)))
            self.__dict__["_scaled_last"] = last  # one tuple, swapped whole: safe across threads
        return last[1:]

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        # In the middle of an op list: float32 HWC out. At the end, the lowering fuses
        # normalization with the layout change and a preceding flip or crop instead.
        from nvidia.dali import fn, types

        return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="HWC",
                                        **self.cmn_args(params, ctx))

    def cmn_role(self) -> str:
        return "normalize"

    def cmn_args(self, params: Any, ctx: Any) -> dict[str, Any]:
        mean, std = resolve_mean_std(self.mean, self.std, ctx.channels)
        scale = ctx.max_value
        return {"mean": (mean * scale).tolist(), "std": (std * scale).tolist()}
