"""The DALI backend's tail stage: the op list's tail on each batch the pipeline (or the host
stage) made, on the loader's device, into the output.

It runs the op list's tail (custom ops at the end, and a Normalize
among them: see ``fastload.backends.dali.lowering``; the list's trailing Normalize is the output's) on the NHWC batch as NumPy arrays on the CPU or
CuPy arrays on the GPU, shared with torch by DLPack without copies, on torch's current stream:

* a ``@fastload.op`` function once per sample, on views of the batch, with the same
  per-sample generator as the torch backend (so CPU results match it exactly);
* a ``@fastload.op(vectorized=True)`` function once with the whole batch on the GPU (its large
  draws made on the device, see ``DeviceGenerator``); on the CPU per sample, as above: calls on
  cache-sized pieces are faster there than one call on the whole batch, and match the torch backend;
* a ``@fastload.batch_op`` function once with the list of the batch's images.

The last op writes straight into the output batch (``fastload.output.BatchWriter``: the output
dtype and layout, the trailing Normalize folded in). The user's batch transforms (mixup, cutmix,
...) run after it, in the Loader's batch stage (``fastload.transforms.stage``).

On the CPU the per-sample work (each sample's op calls and its write into the output) runs on a
pool of the loader's threads, not on the thread that iterates the Loader: NumPy releases the GIL
in its kernels, so the stage scales with the cores instead of capping the loader at what one
thread can do (measured in benchmarks/RESULTS.md, section 7). Samples are independent (each has
its own generator and its own slice of the output), so the results do not depend on the threads.
On the GPU the calls only queue kernels, and stay on the iterating thread, on torch's stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..._optional import require
from ...ops import Normalize, Op
from ...ops.custom import BatchOp, CustomOp, CustomOpError, describe_sample
from ...output import BatchWriter, OutputSpec
from ...threads import LazyThreadPool, run_chunks

__all__ = ["DeviceGenerator", "TailStage"]


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


class TailStage:
    """Runs the tail ops on each batch, into the output.

    Args:
        tail: ops left by the DALI pipeline (see ``fastload.backends.dali.lowering``).
        seed: the loader's seed (rank included).
        output: the loader's output, which the tail's last op writes (its input is always NHWC).
        threads: threads for the per-sample work on the CPU (1: the calling thread only).
    """

    def __init__(self, *, tail: Sequence[Op], seed: int, output: OutputSpec, threads: int = 1) -> None:
        self.tail, self.seed, self.output, self.threads = list(tail), seed, output, threads
        self._pool = LazyThreadPool(threads, "fastload-stage")

    def _map(self, fn: Callable[[int], Any], count: int, gpu: bool) -> list[Any]:
        """``[fn(0), ..., fn(count - 1)]``; on the CPU the rest on the thread pool once ``fn(0)``
        is done here (it sizes the output), each thread taking the next few when free
        (``run_chunks``), the error of the lowest index raised."""
        if gpu or self.threads <= 1 or count <= 1:
            return [fn(i) for i in range(count)]
        results: list[Any] = [fn(0), *[None] * (count - 1)]
        failures: dict[int, Exception] = {}

        def run_share(indices: range) -> None:
            for i in indices:
                try:
                    results[i] = fn(i)
                except Exception as exc:  # the chunk stops; the lowest failing index is raised
                    failures[i] = exc
                    return

        run_chunks(self._pool.get(), count - 1, self.threads, lambda chunk: run_share(range(chunk.start + 1, chunk.stop + 1)))
        if failures:
            raise failures[min(failures)]
        return results

    def close(self) -> None:
        """Let the pool's threads go (a later batch starts a new pool)."""
        self._pool.close()

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor], epoch: int, records: np.ndarray) -> torch.Tensor:
        """The output batch of ``images`` (the NHWC batch, or a list of HWC images when they
        differ in size: the tail's ops must then bring them to one size) of ``records``."""
        return self._run_tail(images, epoch, [int(r) for r in records])

    # On the CPU this is NumPy, not torch: NumPy's single-threaded kernels fuse the cast, the
    # normalization and the layout change into one or two passes, while torch's intra-op threads
    # fight DALI's for the same cores (measured 10x slower per batch on 2 cores).
    def _run_tail(self, images: torch.Tensor | Sequence[torch.Tensor], epoch: int,
                  records: list[int]) -> torch.Tensor:
        """``images``: the NHWC batch, or a list of HWC images when they differ in size (the
        tail's ops must then bring them to one size)."""
        first = images if isinstance(images, torch.Tensor) else images[0]
        gpu = first.is_cuda
        ops = list(self.tail)
        with _on_torch_stream(first):
            xp, batch = _to_array(images)
            out = BatchWriter(xp, first.device, len(records), self.output)
            for k, op in enumerate(ops):
                sink = out if k == len(ops) - 1 else None
                if isinstance(op, Normalize):
                    batch = self._normalize(xp, first.device, batch, op)
                else:
                    batch = self._custom(xp, batch, op, epoch, records, gpu, sink)
            if isinstance(batch, list):
                name = ops[-1].name if ops else "the pipeline"
                self._map(lambda i: out.put(i, batch[i], name, describe_sample((self.seed, epoch, records[i]))),
                          len(batch), gpu)
            elif batch is not None:
                out.put_batch(batch)
            return out.tensor

    def _normalize(self, xp: Any, device: torch.device, batch: Any, op: Normalize) -> Any:
        """A Normalize between custom ops: float32 NHWC (a list stays a list)."""
        spec = OutputSpec(dtype="float32", layout="NHWC", channels=batch[0].shape[-1],
                          pixel_dtype=self.output.pixel_dtype, normalize=op)
        if isinstance(batch, list):
            return self._map(lambda i: BatchWriter(xp, device, 1, spec).put_batch(batch[i][None])[0], len(batch),
                             device.type == "cuda")
        return BatchWriter(xp, device, len(batch), spec).put_batch(batch)

    def _custom(self, xp: Any, batch: Any, op: CustomOp, epoch: int, records: list[int], gpu: bool,
                sink: BatchWriter | None) -> Any:
        """Run one custom op on the batch (an NHWC array or a list of HWC images); its results go
        to ``sink`` (the output) when given (then None is returned), else they are returned (an
        array from a vectorized op, a list of images otherwise)."""
        label = f"the batch of records {records}"
        if isinstance(op, BatchOp):
            rng = op.sample_rng([v for r in records for v in (self.seed, epoch, r)])
            results = op.run_batch(list(batch), _device(rng, xp, gpu), label)
            if sink is None:
                return results
            self._map(lambda i: sink.put(i, results[i], op.name, label), len(results), gpu)
            return None
        if op.vectorized and gpu and _dense(xp, batch) is not None:
            # (on the CPU, per sample is as fast, in cache-sized pieces, and exact)
            batch = _dense(xp, batch)
            rng = op.sample_rng([self.seed, epoch, *records])
            result = op._guarded(batch, _device(rng, xp, gpu), label)
            if type(result).__module__.partition(".")[0] != type(batch).__module__.partition(".")[0] or \
                    result.ndim != 4 or result.shape[0] != batch.shape[0]:
                raise CustomOpError(op.name, label, f"returned {type(result).__name__} of shape "
                                    f"{tuple(getattr(result, 'shape', ()))} for a batch of shape {tuple(batch.shape)}; "
                                    "a vectorized op returns an NxHxWxC array of its input's kind")
            if sink is None:
                return result
            sink.put_batch(result)
            return None
        takes_rng = op._takes_rng()

        def one(i: int) -> Any:
            where = describe_sample((self.seed, epoch, records[i]))
            rng = _device(op.sample_rng((self.seed, epoch, records[i])), xp, gpu) if takes_rng else None
            result = op.run(batch[i], rng, where)
            if sink is None:
                return result  # HWC images, stacked only where a later op needs a batch
            sink.put(i, result, op.name, where)
            return None

        results = self._map(one, len(records), gpu)
        return None if sink is not None else results


def _device(rng: np.random.Generator, xp: Any, gpu: bool) -> Any:
    return DeviceGenerator(rng, xp) if gpu else rng


def _cupy() -> Any:
    return require("cupy", "cuda13", "custom ops on the GPU")


@contextlib.contextmanager
def _on_torch_stream(images: torch.Tensor) -> Iterator[None]:
    """CuPy on the images' device (CuPy keeps its own current device, apart from torch's) and
    on torch's current stream there."""
    if not images.is_cuda:
        yield
        return
    cupy = _cupy()
    with cupy.cuda.Device(images.device.index), \
            cupy.cuda.ExternalStream(torch.cuda.current_stream(images.device).cuda_stream):
        yield


def _to_array(images: torch.Tensor | Sequence[torch.Tensor]) -> tuple[Any, Any]:
    """numpy or cupy, and the batch as its array (a list of arrays for a list of tensors)."""
    if not isinstance(images, torch.Tensor):
        converted = [_to_array(x) for x in images]
        return converted[0][0], [a for _, a in converted]
    if images.is_cuda:
        cupy = _cupy()
        return cupy, cupy.from_dlpack(images)
    return np, images.numpy()


def _dense(xp: Any, batch: Any) -> Any:
    """The batch as one NxHxWxC array, or None when a list of images differs in shape."""
    if not isinstance(batch, list):
        return batch
    return xp.stack(batch) if len({tuple(x.shape) for x in batch}) == 1 else None
