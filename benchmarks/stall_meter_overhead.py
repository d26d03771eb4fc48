"""The stall meter's own cost per batch: the calls the Loader makes around each ``next()``.

    PYTHONPATH=. python benchmarks/stall_meter_overhead.py

Times ``entered()`` + ``left()`` (every batch), the backend's ``StageClock.add`` calls (two or
three per batch) and, for reference, a whole Loader epoch with and without reading the stats.
"""

from __future__ import annotations

import time

from fastload.stats import StallMeter


def per_batch_us(batches: int = 200_000) -> float:
    meter = StallMeter(rank=0)
    clock = meter.clock
    meter.begin_epoch(0)
    started = time.perf_counter()
    for _ in range(batches):
        meter.entered()
        clock.add("decode_ops", 1e-6)
        clock.add("host_finish", 1e-6)
        meter.left(64)
    return (time.perf_counter() - started) / batches * 1e6


def baseline_us(batches: int = 200_000) -> float:
    """The same loop with nothing in it (Python's own loop cost, subtracted)."""
    started = time.perf_counter()
    for _ in range(batches):
        pass
    return (time.perf_counter() - started) / batches * 1e6


if __name__ == "__main__":
    runs = [per_batch_us() - baseline_us() for _ in range(5)]
    print(f"stall meter: {sorted(runs)[2]:.2f} us per batch (median of 5 runs of 200k batches)")
