"""Measure one configuration: build the loader, take its first batch, warm up, time rounds.

Run as ``python -m benchmarks.harness CONFIG_JSON RESULT_PATH`` by the suite, so that every
configuration starts in a fresh process: its memory is its own, and no DALI threads or
DataLoader workers of the previous configuration are still running.

What is measured (all in the result dict):
    first_batch_s      from the start of building the loader to its first batch in hand
    images_per_s       per timed round; the report gives their median, min, max and IQR
    mb_per_s           encoded bytes consumed per second (images/s x mean file size)
    peak_rss_mb        the highest sum of RSS over this process and all its descendants
                       (pages shared by forked workers are counted once per process)
    steady_pss_mb      proportional set size of the same processes after the timed rounds
                       (shared pages split between them: the memory the loader really holds)
    cpu_cores_used     CPU seconds (process + descendants) per wall second while timing
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil

from fastload.tune import endless_batches

from .config import BenchConfig, BenchData, loads
from .loaders import LOADERS

__all__ = ["ResourceMonitor", "measure", "summarize_rates", "usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


class ResourceMonitor:
    """Samples RSS and CPU time of this process and its descendants on a background thread.

    Workers that exit between samples keep their last seen CPU time, so a DataLoader that
    shuts its workers down is still charged for them.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_rss = 0
        self._cpu: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._root = psutil.Process()

    def __enter__(self) -> ResourceMonitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        rss = 0
        for proc in [self._root, *self._children()]:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:  # exited since listed
                continue
            with self._lock:
                self._cpu[proc.pid] = times.user + times.system
        self.peak_rss = max(self.peak_rss, rss)

    def _children(self) -> list[psutil.Process]:
        try:
            return self._root.children(recursive=True)
        except psutil.Error:
            return []

    def pss(self) -> int:
        """Proportional set size of the process tree: shared pages counted once in total.

        Reading smaps costs ~20 ms per process, so this is taken once, in steady state."""
        total = 0
        for proc in [self._root, *self._children()]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.Error, AttributeError):  # AttributeError: no pss off Linux
                continue
        return total

    def cpu_seconds(self) -> float:
        """Total CPU seconds seen so far (call ``sample()`` first for an exact reading)."""
        with self._lock:
            return sum(self._cpu.values())


def _check_batch(batch: Any, config: BenchConfig) -> str:
    """The same work for every loader: refuse a batch that is not float32 NCHW of the size."""
    images, labels = batch
    expected = (config.batch_size, 3, config.image_size, config.image_size)
    if tuple(images.shape) != expected or str(images.dtype) != "torch.float32":
        raise RuntimeError(f"expected float32 images of shape {expected}, "
                           f"got {images.dtype} {tuple(images.shape)}")
    if tuple(labels.shape) != (config.batch_size,) or str(labels.dtype) != "torch.int64":
        raise RuntimeError(f"expected int64 labels of shape ({config.batch_size},), "
                           f"got {labels.dtype} {tuple(labels.shape)}")
    return f"{'x'.join(map(str, expected))} float32 {images.device.type}"


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def summarize_rates(rates: list[float]) -> dict[str, float]:
    """Median, min, max and interquartile range of per-round images/s."""
    q1, median, q3 = np.percentile(rates, [25, 50, 75])
    return {"images_per_s": float(median), "images_per_s_min": float(min(rates)),
            "images_per_s_max": float(max(rates)), "images_per_s_iqr": float(q3 - q1)}


def _timed_rounds(batches: Iterator, config: BenchConfig, device: str,
                  monitor: ResourceMonitor) -> dict[str, Any]:
    rates = []
    monitor.sample()
    cpu0, wall0 = monitor.cpu_seconds(), time.perf_counter()
    for _ in range(config.rounds):
        start, images = time.perf_counter(), 0
        for _ in range(config.batches_per_round):
            images += len(next(batches)[1])
        _synchronize(device)
        rates.append(images / (time.perf_counter() - start))
    wall = time.perf_counter() - wall0
    monitor.sample()
    cpu_used = (monitor.cpu_seconds() - cpu0) / wall
    pss = monitor.pss()
    return {**summarize_rates(rates), "rates": rates, "timed_s": wall,
            "images_timed": config.rounds * config.batches_per_round * config.batch_size,
            "cpu_cores_used": cpu_used, "cpu_util_pct": 100 * cpu_used / usable_cores(),
            "steady_pss_mb": pss / 2**20}


def measure(config: BenchConfig, data: BenchData) -> dict[str, Any]:
    """Measure ``config`` in this process; returns the result row (status "ok")."""
    spec = LOADERS[config.loader]
    rss_before = psutil.Process().memory_info().rss
    with ResourceMonitor() as monitor:
        start = time.perf_counter()
        loader = spec.build(data, config)
        batches = endless_batches(loader)
        try:
            output = _check_batch(next(batches), config)
            _synchronize(spec.device)
            first_batch_s = time.perf_counter() - start
            for _ in range(config.warmup_batches):
                next(batches)
            row = _timed_rounds(batches, config, spec.device, monitor)
        finally:  # in-process runs (--no-isolate, tests): stop workers before the next config
            batches.close()
            if hasattr(loader, "close"):
                loader.close()
    row.update(status="ok", note="", output=output, first_batch_s=first_batch_s,
               mb_per_s=row["images_per_s"] * data.mean_bytes / 1e6,
               peak_rss_mb=monitor.peak_rss / 2**20, rss_before_mb=rss_before / 2**20,
               batches_per_epoch=_length(loader))
    return row


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def main(argv: list[str]) -> int:
    import json

    config, data = loads(argv[0])
    try:
        row = measure(config, data)
    except Exception as exc:  # the row says what failed; the suite goes on with the next
        traceback.print_exc()
        row = {"status": "error", "note": f"{type(exc).__name__}: {exc}"}
    with open(argv[1], "w") as f:
        json.dump(row, f)
    _end_descendants()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: a slow or hanging loader shutdown must not stall the suite.
    os._exit(0)


def _end_descendants() -> None:
    """Stop the DataLoader workers this process started, so none outlives the measurement."""
    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        child.kill()


if __name__ == "__main__":
    main(sys.argv[1:])
