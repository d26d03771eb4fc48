"""The batch stage: what runs on each finished batch, on the loader's device, in its thread.

For the DALI backend it first runs the op list's tail (custom ops at the end, and a Normalize
among them: see ``fastload.pipeline.lowering``) on the NHWC batch as NumPy arrays on the CPU or
CuPy arrays on the GPU, shared with torch by DLPack without copies, on torch's current stream:

* a ``@fastload.op(vectorized=True)`` function is called once with the whole batch;
* any other ``@fastload.op`` function once per sample, on views of the batch, with the same
  per-sample generator as the torch backend (so CPU results match it exactly);
* a ``@fastload.batch_op`` function once with the list of the batch's images.

Then the output dtype and layout, then the user's batch transforms (mixup, cutmix, ...), each
with a ``torch.Generator`` seeded from ``(seed, epoch, batch)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..ops import Normalize, Op
from ..ops.custom import BatchOp, CustomOp, describe_sample
from ..ops.normalize import resolve_mean_std
from .base import batch_generator

__all__ = ["BatchStage", "DeviceGenerator"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "uint8": torch.uint8}


class DeviceGenerator:
    """A NumPy Generator whose large draws (1024+ values) happen on the GPU, with CuPy.

    Custom ops written for NumPy (``rng.standard_normal(x.shape)``) then draw their noise fields
    where the image lives instead of copying them to the GPU; scalars come from NumPy, as on the
    CPU. The device draws are seeded from the NumPy generator, so runs replay; they differ from
    the CPU's numbers (both are valid draws).
    """

    _LARGE = 1024
    _SIZE_AT = {"random": 0, "standard_normal": 0, "normal": 2, "uniform": 2, "integers": 2,
                "standard_exponential": 0, "exponential": 1, "gamma": 2, "beta": 2, "poisson": 1}

    def __init__(self, rng: np.random.Generator, xp: Any) -> None:
        self._rng, self._xp, self._device = rng, xp, None

    def _device_rng(self) -> Any:
        if self._device is None:
            self._device = self._xp.random.default_rng(int(self._rng.integers(2**63)))
        return self._device

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._rng, name)
        if name not in self._SIZE_AT:
            return method

        def draw(*args: Any, **kwargs: Any) -> Any:
            at = self._SIZE_AT[name]
            size = kwargs.get("size", args[at] if len(args) > at else None)
            if size is None or int(np.prod(size)) < self._LARGE:
                return method(*args, **kwargs)
            if name == "normal":  # CuPy's Generator has standard_normal only
                loc = kwargs.get("loc", args[0] if args else 0.0)
                scale = kwargs.get("scale", args[1] if len(args) > 1 else 1.0)
                return loc + scale * self._device_rng().standard_normal(size)
            return getattr(self._device_rng(), name)(*args, **kwargs)

        return draw


class BatchStage:
    """Runs on each batch: the tail ops, the output dtype and layout, the batch transforms.

    Args:
        tail: ops left by the DALI pipeline (empty for the torch backend).
        transforms: batch transforms ``f(images, labels, rng) -> (images, labels)``.
        seed: the loader's seed (rank included).
        layout: "NCHW" or "NHWC" (the tail's input is always NHWC).
        output_dtype: "float32", "float16" or "uint8".
        max_value: the pixel type's full scale (for a tail Normalize).
    """

    def __init__(self, *, tail: Sequence[Op], transforms: Sequence[Callable[..., Any]], seed: int,
                 layout: str, output_dtype: str, max_value: float) -> None:
        self.tail, self.transforms = list(tail), list(transforms)
        self.seed, self.layout, self.output_dtype, self.max_value = seed, layout, output_dtype, max_value

    @property
    def active(self) -> bool:
        return bool(self.tail or self.transforms)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, batch: int,
                 records: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tail:
            images = self._finish(self._run_tail(images, epoch, records))
        for salt, transform in enumerate(self.transforms):
            rng = batch_generator(self.seed, epoch, batch, salt, images.device)
            images, labels = transform(images, labels, rng)
        return images, labels

    # --- the tail ------------------------------------------------------------------------------
    def _run_tail(self, images: torch.Tensor, epoch: int, records: np.ndarray) -> torch.Tensor:
        for op in self.tail:
            if isinstance(op, Normalize):
                images = self._normalize(images, op)
            else:
                images = self._custom(images, op, epoch, records)
        return images

    def _normalize(self, images: torch.Tensor, op: Normalize) -> torch.Tensor:
        mean, std = resolve_mean_std(op.mean, op.std, images.shape[-1])
        scale = 1.0 if images.dtype.is_floating_point else self.max_value
        m = torch.as_tensor(mean * scale, device=images.device)
        s = torch.as_tensor(std * scale, device=images.device)
        return (images.float() - m) / s

    def _custom(self, images: torch.Tensor, op: CustomOp, epoch: int, records: np.ndarray) -> torch.Tensor:
        gpu = images.is_cuda
        with _on_torch_stream(gpu):
            xp, batch = _to_array(images)
            entropies = [[self.seed, epoch, int(r)] for r in records]
            if isinstance(op, BatchOp):
                rng = op.sample_rng([v for e in entropies for v in e])
                label = f"the batch of records {[int(r) for r in records]}"
                out = xp.stack(op.run_batch(list(batch), _device(rng, xp, gpu), label))
            elif op.vectorized:
                rng = op.sample_rng([self.seed, epoch, *(int(r) for r in records)])
                out = op._guarded(batch, _device(rng, xp, gpu), f"the batch of records {list(records)}")
                if out.shape[0] != batch.shape[0] or out.ndim != 4:
                    raise ValueError(f"vectorized custom op {op.name!r} returned shape {tuple(out.shape)} "
                                     f"for a batch of shape {tuple(batch.shape)}")
            else:
                out = xp.stack([op.run(x, _device(op.sample_rng(e), xp, gpu), describe_sample(e))
                                for x, e in zip(batch, entropies)])
            return _to_torch(out, gpu)

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(_DTYPES[self.output_dtype])
        if self.layout == "NCHW":
            images = images.permute(0, 3, 1, 2)
        return images.contiguous()


def _device(rng: np.random.Generator, xp: Any, gpu: bool) -> Any:
    return DeviceGenerator(rng, xp) if gpu else rng


def _on_torch_stream(gpu: bool) -> Any:
    if not gpu:
        return contextlib.nullcontext()
    import cupy

    return cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)


def _to_array(images: torch.Tensor) -> tuple[Any, Any]:
    if images.is_cuda:
        import cupy

        return cupy, cupy.from_dlpack(images)
    return np, images.numpy()


def _to_torch(array: Any, gpu: bool) -> torch.Tensor:
    if gpu:
        return torch.from_dlpack(array)
    return torch.from_numpy(np.ascontiguousarray(array))
