"""Measure one configuration: build the loader, take its first batch, warm up, time rounds.

Run as ``python -m benchmarks.harness CONFIG_JSON RESULT_PATH`` by the suite, so that every
configuration starts in a fresh process: its memory is its own, and no DALI threads or
DataLoader workers of the previous configuration are still running.

What is measured (all in the result dict):
    first_batch_s      from the start of building the loader to its first batch in hand
    images_per_s       per timed round; the report gives their median, min, max and IQR
                       (with ``config.train_model``: training images/s, every batch trained on)
    mb_per_s           encoded bytes consumed per second (images/s x mean file size)
    host_us_per_image  CPU time of the thread that iterates the loader, spent inside the
                       loader's ``next()`` over the timed rounds (``time.thread_time()``), per
                       image: the one thread no core count parallelizes
    feed_ceiling_images_per_s  1e6 / host_us_per_image: the most that thread can feed
    peak_rss_mb        the highest sum of RSS over this process and all its descendants
                       (pages shared by forked workers are counted once per process)
    steady_pss_mb      proportional set size of the same processes after the timed rounds
                       (shared pages split between them: the memory the loader really holds)
    cpu_cores_used     CPU seconds (process + descendants) per wall second while timing
    gpu_mem_peak_mb    where CUDA is used: the GPU's memory in use beyond what it was before
                       the loader was built, at its highest (NVML, sampled with the CPU
                       figures; else nvidia-smi at the start and the end); device-wide
    torch_cuda_peak_mb torch.cuda.max_memory_allocated(): tensors in torch's allocator only
                       (batches handed to torch, the model); DALI's own pools are not in it
    gil_us_per_image   with ``config.gil_seconds``: GIL time of every thread of this process per
                       image, sampled by py-spy after the timed rounds (``benchmarks.gil``)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np
import psutil

from fastload.training import TrainingStep, endless_batches

from .config import BenchConfig, BenchData, loads
from .gil import gil_per_image
from .loaders import LOADERS

__all__ = ["GpuMemory", "ResourceMonitor", "measure", "summarize_rates", "timed_round", "tree_cpu_seconds",
           "usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


class GpuMemory:
    """Memory in use on the GPU that CUDA calls device 0, from NVML (``nvidia-ml-py``) where it
    loads, else from ``nvidia-smi``; ``used()`` is None where neither answers.

    Neither creates a CUDA context, so reading it before the loader starts is safe. The figure
    is device-wide (NVML's per-process figures do not match PIDs inside containers): on a
    shared GPU other processes count too.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handle: Any = None
        self._smi = shutil.which("nvidia-smi")
        try:
            import pynvml
        except ImportError:
            return
        try:
            pynvml.nvmlInit()
            self._handle = self._device_handle(pynvml)
            self._nvml = pynvml
        except pynvml.NVMLError:  # no driver or no such GPU: nvidia-smi, if anything
            pass

    @staticmethod
    def _device_handle(pynvml: Any) -> Any:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if visible.startswith(("GPU-", "MIG-")):
            return pynvml.nvmlDeviceGetHandleByUUID(visible)
        return pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)

    @property
    def cheap(self) -> bool:
        """Whether a reading costs microseconds (NVML), so it can be sampled with the rest."""
        return self._nvml is not None

    def used(self) -> int | None:
        """Bytes in use on the device now."""
        if self._nvml is not None:
            return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        return self._smi_used()

    def _smi_used(self) -> int | None:
        if not self._smi:
            return None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip() or "0"
        try:
            out = subprocess.run([self._smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                  "-i", visible], capture_output=True, text=True, timeout=10, check=True)
            return int(float(out.stdout.strip().splitlines()[0])) * 2**20
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None


class ResourceMonitor:
    """Samples RSS and CPU time of this process and its descendants on a background thread,
    and the GPU's memory in use when given a ``GpuMemory`` that reads cheaply.

    Workers that exit between samples keep their last seen CPU time, so a DataLoader that
    shuts its workers down is still charged for them.
    """

    def __init__(self, interval: float = 0.1, gpu: GpuMemory | None = None) -> None:
        self.interval = interval
        self.peak_rss = 0
        self.gpu = gpu
        self.gpu_baseline = gpu.used() if gpu else None
        self.peak_gpu = self.gpu_baseline
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
        if self.gpu is not None and self.gpu.cheap:
            self.sample_gpu()

    def sample_gpu(self) -> None:
        """Read the GPU's memory now (called by the sampler with NVML, else at set points)."""
        used = self.gpu.used() if self.gpu else None
        if used is not None:
            self.peak_gpu = max(self.peak_gpu or 0, used)

    def gpu_peak_mb(self) -> float | None:
        """The GPU memory peak above the reading taken before the loader was built."""
        if self.peak_gpu is None or self.gpu_baseline is None:
            return None
        return (self.peak_gpu - self.gpu_baseline) / 2**20

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


def tree_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and its children (feed and DataLoader workers)."""
    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # exited since listed
            continue
        total += times.user + times.system
    return total


def timed_round(stream: Iterator[Any], batches: int, flush: int, settle: float = 0.0,
                tree: bool = False) -> dict[str, float]:
    """One loader's turn in an interleaved comparison (benchmarks/interleaved.py, custom_ops.py).

    ``flush`` untimed batches first (those its workers prepared while another loader ran), then
    ``batches`` timed ones, the device synchronized at the end; then ``settle`` seconds in which
    its prefetching finishes, so that none of it lands in the next loader's turn. Returns the
    seconds, the iterating thread's CPU seconds, the images and (``tree``) the CPU seconds of
    the whole process tree.
    """
    for _ in range(flush):
        x, _ = next(stream)
    if flush:  # the device idle when the clock starts
        _synchronize("cuda" if x.is_cuda else "cpu")
    images, tree0 = 0, tree_cpu_seconds() if tree else 0.0
    start, thread = time.perf_counter(), time.thread_time()
    for _ in range(batches):
        x, _ = next(stream)
        images += len(x)
    _synchronize("cuda" if x.is_cuda else "cpu")
    result = {"seconds": time.perf_counter() - start, "thread": time.thread_time() - thread, "images": images}
    if tree:
        result["tree"] = tree_cpu_seconds() - tree0
    time.sleep(settle)
    return result


def summarize_rates(rates: list[float]) -> dict[str, float]:
    """Median, min, max and interquartile range of per-round images/s."""
    q1, median, q3 = np.percentile(rates, [25, 50, 75])
    return {"images_per_s": float(median), "images_per_s_min": float(min(rates)),
            "images_per_s_max": float(max(rates)), "images_per_s_iqr": float(q3 - q1)}


def _timed_rounds(batches: Iterator, config: BenchConfig, device: str, monitor: ResourceMonitor,
                  step: TrainingStep | None) -> dict[str, Any]:
    rates, host = [], 0.0
    monitor.sample()
    cpu0, wall0 = monitor.cpu_seconds(), time.perf_counter()
    for _ in range(config.rounds):
        start, images = time.perf_counter(), 0
        for _ in range(config.batches_per_round):
            # Only the loader's share of the iterating thread: the training step is not in it.
            thread0 = time.thread_time()
            batch = next(batches)
            host += time.thread_time() - thread0
            images += len(batch[1])
            if step is not None:
                step(*batch)
        _synchronize(device)
        rates.append(images / (time.perf_counter() - start))
    wall = time.perf_counter() - wall0
    monitor.sample()
    monitor.sample_gpu()
    cpu_used = (monitor.cpu_seconds() - cpu0) / wall
    pss = monitor.pss()
    images_timed = config.rounds * config.batches_per_round * config.batch_size
    host_us = 1e6 * host / images_timed
    return {**summarize_rates(rates), "rates": rates, "timed_s": wall, "images_timed": images_timed,
            "cpu_cores_used": cpu_used, "cpu_util_pct": 100 * cpu_used / usable_cores(),
            "steady_pss_mb": pss / 2**20, "host_us_per_image": host_us,
            "feed_ceiling_images_per_s": 1e6 / host_us if host_us > 0 else None}


def _draw(batches: Iterator, step: TrainingStep | None) -> int:
    """One batch (through the training step, if any); its image count."""
    batch = next(batches)
    if step is not None:
        step(*batch)
    return len(batch[1])


def _uses_cuda(config: BenchConfig) -> bool:
    spec = LOADERS[config.loader]
    training_on_gpu = config.train_model is not None and config.train_device == "cuda"
    return spec.device == "cuda" or training_on_gpu


def _training_step(config: BenchConfig, data: BenchData) -> TrainingStep | None:
    if config.train_model is None:
        return None
    return TrainingStep(config.train_model, num_classes=max(data.classes, 1), device=config.train_device)


@contextlib.contextmanager
def _cudnn_autotune(config: BenchConfig) -> Iterator[None]:
    """cuDNN's autotuner on while training on the GPU (fixed shapes: what a training script
    sets), restored after: in-process runs (tests) must not leave it changed."""
    if config.train_model is None or config.train_device != "cuda":
        yield
        return
    import torch

    before, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


@contextlib.contextmanager
def _host_margin(config: BenchConfig) -> Iterator[None]:
    """The row's host-stage share margin (``BenchConfig.host_margin``; DALI's threads then at the
    process's priority), put back afterwards: rows measured in one process (``--no-isolate``,
    tests) do not inherit it."""
    if config.host_margin is None:
        yield
        return
    from fastload.backends.dali import share

    before = share.MARGIN, share.DALI_NICE
    share.MARGIN, share.DALI_NICE = config.host_margin, 0
    try:
        yield
    finally:
        share.MARGIN, share.DALI_NICE = before


def measure(config: BenchConfig, data: BenchData) -> dict[str, Any]:
    """Measure ``config`` in this process; returns the result row (status "ok").

    With ``config.train_model``, every batch after the first (warm-up included) goes through
    a training step on ``config.train_device``; the first batch's latency is the loader's alone
    (the model is built after it, so CUDA is first touched once the loader has started).
    """
    spec = LOADERS[config.loader]
    # Synchronize where the last work was queued: the model's device when training.
    sync_device = config.train_device if config.train_model else spec.device
    rss_before = psutil.Process().memory_info().rss
    gpu = GpuMemory() if _uses_cuda(config) else None
    with ResourceMonitor(gpu=gpu) as monitor, _cudnn_autotune(config), _host_margin(config):
        start = time.perf_counter()
        loader = spec.build(data, config)
        batches = endless_batches(loader)
        try:
            output = _check_batch(next(batches), config)
            _synchronize(sync_device if spec.training_only else spec.device)
            first_batch_s = time.perf_counter() - start
            step = _training_step(config, data)
            for _ in range(config.warmup_batches):
                batch = next(batches)
                if step is not None:
                    step(*batch)
            _synchronize(sync_device)
            row = _timed_rounds(batches, config, sync_device, monitor, step)
            if config.gil_seconds > 0:
                row.update(gil_per_image(lambda: _draw(batches, step), config.gil_seconds))
        finally:  # in-process runs (--no-isolate, tests): stop workers before the next config
            batches.close()
            if hasattr(loader, "close"):
                loader.close()
    row.update(status="ok", note="", output=output, first_batch_s=first_batch_s,
               mb_per_s=row["images_per_s"] * data.mean_bytes / 1e6,
               peak_rss_mb=monitor.peak_rss / 2**20, rss_before_mb=rss_before / 2**20,
               batches_per_epoch=_length(loader), **_gpu_memory(gpu, monitor))
    if config.train_model:
        row.update(train_model=config.train_model, train_device=config.train_device)
    if config.host_margin is not None:
        row.update(host_margin=config.host_margin)
    return row


def _gpu_memory(gpu: GpuMemory | None, monitor: ResourceMonitor) -> dict[str, Any]:
    if gpu is None:
        return {}
    import torch

    torch_peak = (torch.cuda.max_memory_allocated() / 2**20
                  if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    return {"gpu_mem_peak_mb": monitor.gpu_peak_mb(), "torch_cuda_peak_mb": torch_peak}


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
