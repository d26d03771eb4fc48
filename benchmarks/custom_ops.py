"""Custom-operator overhead in a DALI CPU pipeline: ms per batch of 64 224x224x3 uint8 images
above a pipeline that only feeds them, for built-in ops and for @fastload.op functions run
through ``fn.python_function``.

    python benchmarks/custom_ops.py
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import fastload
from fastload import ops
from fastload.backends.dali_backend import DaliContext

IMAGES = [np.random.default_rng(i).integers(0, 256, (224, 224, 3), dtype=np.uint8) for i in range(64)]


@fastload.op
def identity(x):
    """The cheapest custom op: what python_function itself costs."""
    return x


def _feed() -> list[np.ndarray]:
    return IMAGES


def ms_per_batch(op_list: list, batches: int = 20, repeats: int = 3) -> float:
    """Median ms per batch of a CPU pipeline running ``op_list`` on the fixed batch."""
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=64, num_threads=2, device_id=None, seed=0, prefetch_queue_depth=1)
    def pipeline():
        x = fn.external_source(source=_feed, layout="HWC", batch=True)
        ctx = DaliContext(device="cpu", channels=3, max_value=255.0, seed=0)
        for op in op_list:
            x = op.dali(x, ctx)
        return x

    pipe = pipeline()
    pipe.build()
    for _ in range(3):
        pipe.run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            pipe.run()
        times.append((time.perf_counter() - start) / batches * 1000)
    return statistics.median(times)


def main() -> None:
    base = ms_per_batch([])
    print(f"{'external_source only':36s} {base:7.1f} ms per batch of 64")
    cases = [("built-in ColorJitter(brightness)", [ops.ColorJitter(brightness=0.2)]),
             ("built-in GaussianBlur(sigma=1)", [ops.GaussianBlur(sigma=1.0)]),
             ("custom identity (python_function)", [identity]),
             ("custom GaussianNoise", [ops.GaussianNoise(0.02)]),
             ("custom HistogramEqualization", [ops.HistogramEqualization()])]
    for name, op_list in cases:
        print(f"{name:36s} {ms_per_batch(op_list) - base:7.1f} ms per batch above that")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
