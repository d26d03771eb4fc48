"""The stall meter: how long the training loop waited for the Loader, and where the Loader's time went.

    loader = fastload.Loader("train.lmdb", batch_size=256, log_every=1)   # one line per epoch
    for images, labels in loader:
        ...
    print(loader.stats())            # this epoch so far, on this rank
    print(fastload.stats.report(loader))   # every rank's, naming the slowest (collective under DDP)

Per batch the Loader takes two clock readings: on entering ``next()`` and on leaving it. The time
inside is the loop's **wait** (the stall); the time from one ``next()`` returning to the next call
is the **step** (the training work). The stall fraction is ``wait / (wait + step)``.

Backends add what they can time cheaply to a ``StageClock`` (seconds per stage name):

* ``feed``: the DALI feed, the Loader's thread waiting for a worker to fill a batch's slot;
* ``decode_ops``: decode and augmentation (DALI's ``run()`` less the feed in it; the torch
  backend's workers: read, decode and ops, summed over the workers, so work, not wall time);
* ``host_finish``: the CPU host stage (DALI on the CPU) or the torch backend's normalize/layout;
* ``batch_stage``: the Loader's batch stage (tail ops, mixup, ...);
* ``transfer``: host to device copies (torch backend with CUDA output).

Work queued on the GPU is timed with CUDA events, read once they have completed (never a sync on
the training path). The meter's own cost is a few perf_counter calls per batch
(benchmarks/stall_meter_overhead.py measures it).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STAGES", "StageClock", "LoaderStats", "StallMeter", "RankReport", "report", "gather"]

STAGES = ("feed", "decode_ops", "host_finish", "batch_stage", "transfer")
_LOG = logging.getLogger("fastload.stats")


class StageClock:
    """Seconds spent per loader stage, added by whoever does the work (cumulative, never reset).

    CPU spans add at once; GPU spans are a pair of CUDA events read when they have completed
    (``totals`` waits for the last ones only when asked with ``sync=True``).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._gpu: list[tuple[str, Any, Any]] = []  # (stage, start event, end event), oldest first

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextlib.contextmanager
    def span(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    @contextlib.contextmanager
    def gpu_span(self, stage: str, device: Any) -> Iterator[None]:
        """Time the work queued on ``device``'s current stream with CUDA events (no sync)."""
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(torch.cuda.current_stream(device))
        try:
            yield
        finally:
            end.record(torch.cuda.current_stream(device))
            self._gpu.append((stage, start, end))
            self._collect(sync=False)

    def _collect(self, sync: bool) -> None:
        while self._gpu and (sync or self._gpu[0][2].query()):
            stage, start, end = self._gpu.pop(0)
            end.synchronize()
            self.add(stage, start.elapsed_time(end) / 1000.0)

    def totals(self, sync: bool = False) -> dict[str, float]:
        """A copy of the seconds per stage (GPU spans that have completed, all of them with ``sync``)."""
        self._collect(sync)
        return dict(self.seconds)


@dataclass(frozen=True)
class LoaderStats:
    """What one rank's training loop saw of the Loader over a span of batches (an epoch, or all).

    Attributes:
        rank: the process's rank (0 without torch.distributed).
        epoch: the epoch (-1 for figures over several epochs).
        batches, images: batches and images handed out.
        wait_s: seconds the loop spent inside ``next(loader)`` (stalled on data).
        step_s: seconds between a ``next()`` returning and the next call (the training step).
        stages: seconds per loader stage (see the module docstring; stages that do not apply are 0).
    """

    rank: int = 0
    epoch: int = -1
    batches: int = 0
    images: int = 0
    wait_s: float = 0.0
    step_s: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @property
    def stall_fraction(self) -> float:
        """The share of the loop's time spent waiting for data (0: never waited)."""
        total = self.wait_s + self.step_s
        return self.wait_s / total if total > 0 else 0.0

    @property
    def wait_per_batch_ms(self) -> float:
        return 1000.0 * self.wait_s / self.batches if self.batches else 0.0

    @property
    def images_per_s(self) -> float:
        total = self.wait_s + self.step_s
        return self.images / total if total > 0 else 0.0

    def __add__(self, other: LoaderStats) -> LoaderStats:
        stages = {k: self.stages.get(k, 0.0) + other.stages.get(k, 0.0) for k in {*self.stages, *other.stages}}
        return LoaderStats(self.rank, -1, self.batches + other.batches, self.images + other.images,
                           self.wait_s + other.wait_s, self.step_s + other.step_s, stages)

    def summary(self) -> str:
        """One line: ``rank 0 epoch 3: 120 batches, 7680 img, waited 1.2 s (4.1% stalled) ...``."""
        span = f"epoch {self.epoch}" if self.epoch >= 0 else "all epochs"
        busy = ", ".join(f"{k} {v:.2f}s" for k, v in self.stages.items() if v > 0) or "none timed"
        return (f"rank {self.rank} {span}: {self.batches} batches, {self.images} img, "
                f"waited {self.wait_s:.2f}s ({100 * self.stall_fraction:.1f}% stalled, "
                f"{self.wait_per_batch_ms:.1f} ms/batch), step {self.step_s:.2f}s, "
                f"{self.images_per_s:.0f} img/s; loader: {busy}")

    def as_dict(self) -> dict[str, float]:
        """Flat numbers (for a logger): ``wait_s``, ``stall_fraction``, ``stage/feed``, ..."""
        out = {"batches": float(self.batches), "images": float(self.images), "wait_s": self.wait_s,
               "step_s": self.step_s, "stall_fraction": self.stall_fraction}
        out.update({f"stage/{k}": v for k, v in self.stages.items()})
        return out


class StallMeter:
    """Counts the Loader's batches and times the loop around ``next()``; one per Loader.

    The Loader calls ``begin_epoch`` when a pass takes its epoch, ``entered`` on entering
    ``next()`` and ``left`` on handing a batch out; ``stats`` and ``epochs`` are what users read.
    """

    def __init__(self, rank: int, clock: StageClock | None = None, log_every: int | None = None) -> None:
        if log_every is not None and int(log_every) < 1:
            raise ValueError(f"log_every must be a number of epochs >= 1 (or None), got {log_every!r}")
        self.rank, self.log_every = rank, log_every
        self.clock = clock or StageClock()
        self.epochs: list[LoaderStats] = []  # finished epochs, oldest first
        self._entered_at = 0.0  # kept across _reset: a pass takes its epoch inside its first next()
        self._reset(-1)

    def _reset(self, epoch: int) -> None:
        # plain counters, updated in place: no allocation per batch
        self._epoch, self._batches, self._images, self._wait, self._step = epoch, 0, 0, 0.0, 0.0
        self._stages_at = self.clock.totals()
        self._left_at: float | None = None  # the time before an epoch's first batch is not a step

    def attach(self, clock: StageClock) -> None:
        """Take the backend's clock (built with the backend, after the meter)."""
        if clock is not self.clock:
            self.clock = clock
            self._stages_at = clock.totals()

    def begin_epoch(self, epoch: int) -> None:
        self.finish_epoch()
        self._reset(epoch)

    def finish_epoch(self) -> None:
        """Close the epoch in progress (if it handed out batches) and log it when asked."""
        if self._batches == 0:
            return
        done = self._snapshot()
        self.epochs.append(done)
        self._reset(done.epoch)
        if self.log_every and (done.epoch + 1) % self.log_every == 0:
            _LOG.info(done.summary())

    def entered(self) -> None:
        now = time.perf_counter()
        if self._left_at is not None:
            self._step += now - self._left_at
        self._entered_at = now

    def left(self, images: int) -> None:
        now = time.perf_counter()
        self._wait += now - self._entered_at
        self._batches += 1
        self._images += images
        self._left_at = now

    def _snapshot(self) -> LoaderStats:
        totals = self.clock.totals()
        stages = {k: totals.get(k, 0.0) - self._stages_at.get(k, 0.0) for k in totals}
        return LoaderStats(self.rank, self._epoch, self._batches, self._images, self._wait, self._step, stages)

    def stats(self, total: bool = False) -> LoaderStats:
        """The epoch in progress (or the last one, once it has ended); ``total``: every epoch so far."""
        current = self._snapshot() if self._batches else None
        if not total:
            return current or (self.epochs[-1] if self.epochs else LoaderStats(rank=self.rank))
        out = LoaderStats(rank=self.rank)
        for part in [*self.epochs, *([current] if current else [])]:
            out = out + part
        return out


@dataclass(frozen=True)
class RankReport:
    """Every rank's figures for the same span, and the slowest rank (the one that waited most)."""

    ranks: list[LoaderStats]

    @property
    def slowest(self) -> int:
        return max(self.ranks, key=lambda s: s.wait_s).rank

    def __str__(self) -> str:
        lines = [s.summary() for s in self.ranks]
        if len(self.ranks) > 1:
            worst = max(self.ranks, key=lambda s: s.wait_s)
            lines.append(f"slowest: rank {worst.rank} waited {worst.wait_s:.2f}s "
                         f"({100 * worst.stall_fraction:.1f}% stalled)")
        return "\n".join(lines)


def _pack(stats: LoaderStats) -> list[float]:
    return [float(stats.rank), float(stats.epoch), float(stats.batches), float(stats.images),
            stats.wait_s, stats.step_s, *(stats.stages.get(k, 0.0) for k in STAGES)]


def _unpack(row: list[float]) -> LoaderStats:
    return LoaderStats(int(row[0]), int(row[1]), int(row[2]), int(row[3]), row[4], row[5],
                       dict(zip(STAGES, row[6:])))


def gather(stats: LoaderStats) -> RankReport:
    """Every rank's ``stats`` (a collective under torch.distributed: call it on every rank).

    The figures travel as one float64 tensor per rank (all_gather), never pickled objects.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return RankReport([stats])
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    mine = torch.tensor(_pack(stats), dtype=torch.float64, device=device)
    rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(rows, mine)
    return RankReport([_unpack(r.cpu().tolist()) for r in rows])


def report(loader: Any, total: bool = False) -> RankReport:
    """The plain-loop helper: ``print(fastload.stats.report(loader))`` after each epoch gives
    every rank's line and names the slowest rank (collective under torch.distributed)."""
    return gather(loader.stats(total=total))
