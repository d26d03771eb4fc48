"""Run ops inside a small DALI pipeline (external_source feeding HWC arrays), for the op tests.

Each sample's parameters are drawn as the Loader's feed draws them (``ParamLayout``, from
``[seed, 0, sample]``), so ``op.numpy(image, sample_rng(seed, 0, i))`` is the NumPy twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastload.backends.dali.lowering import LoweringContext
from fastload.backends.dali.params import ParamLayout
from fastload.ops.normalize import max_value


def run_dali(ops: Sequence[Any], images: list[np.ndarray], seed: int = 0, ids: list[np.ndarray] | None = None,
             device: str = "cpu") -> list[np.ndarray]:
    """One batch of ``images`` through ``op.dali`` for each op; returns the output arrays."""
    from nvidia.dali import fn, pipeline_def, types

    channels = images[0].shape[2]
    layout = ParamLayout(ops)
    params = [layout.draw(seed, 0, i, *image.shape[:2]) for i, image in enumerate(images)]

    @pipeline_def(batch_size=len(images), num_threads=1, device_id=None if device == "cpu" else 0, seed=seed)
    def pipe():
        x = fn.external_source(source=lambda: images, layout="HWC", batch=True)
        p = fn.external_source(source=lambda: params, batch=True, dtype=types.FLOAT)
        sample_ids = None
        if ids is not None:
            sample_ids = fn.external_source(source=lambda: ids, batch=True)
        if device == "gpu":
            x = x.gpu()
        ctx = LoweringContext(device=device, channels=channels, max_value=max_value(images[0].dtype),
                              sample_ids=sample_ids)
        for i, op in enumerate(ops):
            x = op.dali(x, layout.slice(p, i), ctx)
        return x

    p = pipe()
    p.build()
    out = p.run()[0]
    if device == "gpu":
        out = out.as_cpu()
    return [np.array(out[i]) for i in range(len(images))]
