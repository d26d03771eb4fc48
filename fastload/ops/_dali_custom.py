"""Custom operators inside DALI pipelines, through ``fn.python_function``.

DALI 2.x runs ``python_function`` with its default (dynamic) executor, no
``exec_async=False``/``exec_pipelined=False`` needed. On CPU the function receives NumPy arrays,
on the GPU CuPy arrays that DALI hands over by DLPack (zero-copy, on DALI's stream).

Each sample's generator is seeded from per-sample integers that travel beside the image as a
second input. When the pipeline's context has ``sample_ids`` (``[seed, epoch, record]`` per
sample, int64), the generator is ``spec.sample_rng(ids)``: the same numbers the torch backend
gives the op for that sample. Without them, one int per sample drawn by a DALI random
operator (seeded from the pipeline's seed) seeds it: reproducible, but not the torch numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .._optional import require
from .base import describe_sample

__all__ = ["python_function", "SampleRunner", "BatchRunner"]


class CustomSpec(Protocol):
    """What the runners need of a custom op (``fastload.ops.custom.CustomOp``, which imports
    this module to lower itself: the runners name the interface, not the class)."""

    batch: bool

    def sample_rng(self, entropy: Sequence[int]) -> np.random.Generator: ...

    def run(self, x: Any, rng: np.random.Generator, sample: str) -> Any: ...

_SEED_RANGE = [0, 2**31 - 1]


def _host_ints(values: Any) -> list[int]:
    """Seed ints from a NumPy or CuPy array (a few integers: copying them is negligible)."""
    if hasattr(values, "get"):
        values = values.get()
    return [int(v) % (1 << 64) for v in np.ravel(values)]  # SeedSequence takes no negatives


class SampleRunner:
    """The per-sample callable handed to DALI: ``(image, *seed_parts) -> image``."""

    def __init__(self, spec: CustomSpec, has_ids: bool) -> None:
        self.spec = spec
        self.has_ids = has_ids

    def __call__(self, image: Any, seeds: Any) -> Any:
        entropy = _host_ints(seeds)
        sample = describe_sample(entropy) if self.has_ids else f"a sample (DALI seed {entropy})"
        out = self.spec.run(image, self.spec.sample_rng(entropy), sample)
        return _contiguous(out)


class BatchRunner:
    """The per-batch callable: ``(images, *seed_parts) -> images`` (lists of arrays)."""

    def __init__(self, spec: Any, has_ids: bool) -> None:
        self.spec = spec
        self.has_ids = has_ids

    def __call__(self, images: list[Any], seeds: list[Any]) -> list[Any]:
        per_sample = [_host_ints(s) for s in seeds]
        label = f"a batch of {len(images)}"
        if self.has_ids:
            label = f"the batch of records {[e[2] for e in per_sample if len(e) >= 3]}"
        out = self.spec.run_batch(list(images), self.spec.sample_rng([v for e in per_sample for v in e]), label)
        return [_contiguous(x) for x in out]


def _contiguous(x: Any) -> Any:
    xp = np if isinstance(x, np.ndarray) else __import__("cupy")
    return xp.ascontiguousarray(x)


def python_function(spec: CustomSpec, images: Any, ctx: Any) -> Any:
    """``fn.python_function`` running ``spec`` on ``images`` (a DataNode on ``ctx.device``)."""
    dali = require("nvidia.dali", "cuda13", "custom ops in DALI pipelines")
    fn, types = dali.fn, dali.types
    device = getattr(ctx, "device", "cpu")
    ids = getattr(ctx, "sample_ids", None)
    seeds = ids if ids is not None else fn.random.uniform(range=_SEED_RANGE, dtype=types.INT32)
    if device == "gpu":
        seeds = seeds.gpu()
    runner = (BatchRunner if spec.batch else SampleRunner)(spec, ids is not None)
    return fn.python_function(images, seeds, function=runner, device=device,
                              batch_processing=spec.batch, output_layouts="HWC")
