"""Run ops inside a small DALI CPU pipeline (external_source feeding HWC arrays), for the op tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FakeDaliContext:
    """What the ops' dali() methods read from the pipeline's context."""

    device: str = "cpu"
    seed: int = 0
    channels: int = 3
    sample_ids: Any = None


def run_dali(ops: Sequence[Any], images: list[np.ndarray], seed: int = 0, ids: list[np.ndarray] | None = None,
             device: str = "cpu") -> list[np.ndarray]:
    """One batch of ``images`` through ``op.dali`` for each op; returns the output arrays."""
    from nvidia.dali import fn, pipeline_def

    channels = images[0].shape[2]

    @pipeline_def(batch_size=len(images), num_threads=1, device_id=None if device == "cpu" else 0, seed=seed)
    def pipe():
        x = fn.external_source(source=lambda: images, layout="HWC", batch=True)
        sample_ids = None
        if ids is not None:
            sample_ids = fn.external_source(source=lambda: ids, batch=True)
        if device == "gpu":
            x = x.gpu()
        ctx = FakeDaliContext(device=device, seed=seed, channels=channels, sample_ids=sample_ids)
        for op in ops:
            x = op.dali(x, ctx)
        return x

    p = pipe()
    p.build()
    out = p.run()[0]
    if device == "gpu":
        out = out.as_cpu()
    return [np.array(out[i]) for i in range(len(images))]
