"""The suite: a grid of configurations (loaders x threads x batch sizes), each measured in a
fresh subprocess with warm-up and timed rounds, like FFCV's ``benchmarks/decorator.py``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .config import BenchConfig, BenchData, dumps
from .loaders import LOADERS

__all__ = ["Grid", "run_config", "run_module", "run_suite"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Grid:
    """What to run: every loader at every thread count and batch size.

    Attributes:
        loaders: registered loader names.
        threads, batch_sizes: the grid's axes.
        image_size: output side of the train preset.
        warmup_batches: batches after the first before timing.
        images_per_round: each timed round draws ceil(this / batch size) batches (at least 2).
        rounds: timed rounds per configuration.
        timeout_s: a configuration running longer is killed and reported as an error.
        train_model, train_device: train this torchvision model on every batch, on this device
            (``BenchConfig``); the synthetic reference may then be one of the loaders, and is
            run once per batch size (threads do not apply to it).
        gil_seconds: after the timed rounds, sample the GIL with py-spy for this long (0: not).
    """

    loaders: tuple[str, ...]
    threads: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    image_size: int = 224
    warmup_batches: int = 5
    images_per_round: int = 1280
    rounds: int = 5
    seed: int = 0
    timeout_s: float = 600.0
    train_model: str | None = None
    train_device: str = "cpu"
    gil_seconds: float = 0.0

    def __post_init__(self) -> None:
        unknown = [n for n in self.loaders if n not in LOADERS]
        if unknown:
            raise ValueError(f"unknown loaders {unknown}; known: {', '.join(LOADERS)}")
        reference = [n for n in self.loaders if LOADERS[n].training_only]
        if reference and self.train_model is None:
            raise ValueError(f"{reference} is the data-free reference of training; it needs a model")
        if not self.threads or not self.batch_sizes or min(self.threads + self.batch_sizes) < 1:
            raise ValueError("threads and batch sizes must be non-empty lists of positive integers")

    def configs(self, loader: str) -> list[BenchConfig]:
        threads = self.threads[-1:] if LOADERS[loader].training_only else self.threads
        return [BenchConfig(loader=loader, threads=t, batch_size=b, image_size=self.image_size,
                            warmup_batches=self.warmup_batches,
                            batches_per_round=max(2, math.ceil(self.images_per_round / b)),
                            rounds=self.rounds, seed=self.seed, train_model=self.train_model,
                            train_device=self.train_device, gil_seconds=self.gil_seconds)
                for t, b in itertools.product(threads, self.batch_sizes)]


def _describe(loader: str, config: BenchConfig | None = None) -> dict[str, Any]:
    spec = LOADERS[loader]
    device = config.train_device if spec.training_only and config else spec.device
    row = {"loader": loader, "family": spec.family, "source": spec.source, "device": device}
    if config is not None and config.train_model:
        row.update(train_model=config.train_model, train_device=config.train_device)
    return row


def _skipped(loader: str, note: str, config: BenchConfig | None = None) -> dict[str, Any]:
    where = {"threads": config.threads, "batch_size": config.batch_size,
             "image_size": config.image_size} if config else {}
    return {**_describe(loader, config), **where, "status": "skipped", "note": note}


def run_config(config: BenchConfig, data: BenchData, timeout_s: float = 600.0,
               isolate: bool = True, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Measure one configuration, in a fresh subprocess unless ``isolate`` is False (``env``:
    variables to set in that subprocess, e.g. ``CUDA_VISIBLE_DEVICES=""`` to hide the GPU)."""
    base = {**_describe(config.loader, config), "threads": config.threads,
            "batch_size": config.batch_size, "image_size": config.image_size}
    if not isolate:
        from .harness import measure

        return {**base, **measure(config, data)}
    return {**base, **run_module("benchmarks.harness", dumps(config, data), timeout_s, env)}


def run_module(module: str, argument: str, timeout_s: float,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """``python -m module ARGUMENT RESULT_PATH`` in a fresh process (its own session, killed
    with its workers after ``timeout_s``; ``env`` added to this process's environment); the
    JSON it wrote, or {"status": "error", ...}."""
    env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join(
        p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory(prefix="fastload-bench-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", module, argument, result_path]
        # A session of its own, so a timeout can end the loader's workers with it.
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"status": "error", "note": f"timed out after {timeout_s:.0f} s"}
        if not os.path.exists(result_path):
            tail = " | ".join(output.strip().splitlines()[-3:])
            return {"status": "error", "note": f"exit code {proc.returncode}: {tail}"}
        with open(result_path) as f:
            return json.load(f)


def _loader_rows(loader: str, grid: Grid, data: BenchData, isolate: bool) -> Iterator[dict[str, Any]]:
    reason = LOADERS[loader].unavailable(data)
    if reason:
        row = _skipped(loader, reason)
        if grid.train_model:
            row.update(train_model=grid.train_model, train_device=grid.train_device)
        yield row
        return
    for config in grid.configs(loader):
        if config.batch_size > data.count and not LOADERS[loader].training_only:
            yield _skipped(loader, f"only {data.count} images: less than one batch", config)
        else:
            yield run_config(config, data, grid.timeout_s, isolate)


def run_suite(grid: Grid, data: BenchData, *, isolate: bool = True,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every configuration of ``grid``; one "skipped" row per loader that cannot run here."""
    rows = []
    for loader in grid.loaders:
        for row in _loader_rows(loader, grid, data, isolate):
            rows.append(row)
            if on_row:
                on_row(row)
    return rows
