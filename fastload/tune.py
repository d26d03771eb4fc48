"""Find the fastest Loader settings for a store on this machine: ``fastload tune STORE``.

A short coordinate search: measure the Loader's defaults, then sweep ``num_threads`` at the
default batch size, ``batch_size`` at the best thread count, and ``prefetch`` at the best of
both. Every trial builds a Loader, draws warm-up batches, then times a few rounds and keeps
their median, so one slow round (another process waking up) does not decide the winner.

    >>> result = tune("train.lmdb")                             # doctest: +SKIP
    >>> print(result)                                           # doctest: +SKIP
    >>> loader = fastload.Loader("train.lmdb", **result.best)  # doctest: +SKIP

Batch size changes training, not just speed: pass ``batch_sizes=[yours]`` to keep it.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import FastloadError
from .parallel import default_workers

__all__ = ["Trial", "TuneResult", "tune", "default_settings", "time_loader", "endless_batches"]

SETTINGS = ("num_threads", "batch_size", "prefetch")


def default_settings() -> dict[str, int]:
    """What ``fastload.Loader`` uses when these are not given (read from its signature)."""
    import inspect

    from .loader import Loader

    params = inspect.signature(Loader).parameters
    threads = params["num_threads"].default
    return {"num_threads": default_workers() if threads is None else threads,
            "batch_size": params["batch_size"].default, "prefetch": params["prefetch"].default}


def _store_size(store: Any) -> int:
    if hasattr(store, "labels"):  # an open store (a list of shard paths also has a len)
        return len(store)
    from .stores import open_store

    opened = open_store(store)
    try:
        return len(opened)
    finally:
        opened.close()


@dataclass(frozen=True)
class Trial:
    """One measured setting: median images/s over the timed rounds, and each round's rate."""

    settings: dict[str, int]
    images_per_s: float
    rounds: list[float]
    first_batch_s: float
    error: str | None = None

    def __str__(self) -> str:
        outcome = f"{self.images_per_s:.0f} images/s" if self.error is None else f"failed: {self.error}"
        return f"{_fmt(self.settings)}: {outcome}"


@dataclass
class TuneResult:
    """The search's outcome. ``best`` are Loader keyword arguments.

    Attributes:
        best, best_images_per_s: the winning settings and their median images/s.
        default, default_images_per_s: the Loader's defaults and theirs.
        defaults_are_best: no setting beat the defaults by more than ``tolerance``.
        tolerance: the gain below which a difference is treated as noise.
        trials: every measurement, in order (the winner and the defaults are measured twice).
        loader_kwargs: the other arguments every trial's Loader got (backend, device, ...).
    """

    best: dict[str, int]
    best_images_per_s: float
    default: dict[str, int]
    default_images_per_s: float
    tolerance: float
    trials: list[Trial] = field(default_factory=list)
    loader_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """Best over default throughput (1.0: no gain)."""
        return self.best_images_per_s / self.default_images_per_s if self.default_images_per_s else math.inf

    @property
    def defaults_are_best(self) -> bool:
        return self.best == self.default

    def to_json(self) -> dict[str, Any]:
        return {"best": self.best, "best_images_per_s": self.best_images_per_s,
                "default": self.default, "default_images_per_s": self.default_images_per_s,
                "gain": self.gain, "defaults_are_best": self.defaults_are_best,
                "tolerance": self.tolerance, "loader_kwargs": self.loader_kwargs,
                "trials": [asdict(t) for t in self.trials]}

    def loader_call(self, path: str = "STORE") -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.best.items())
        return f"fastload.Loader({path!r}, {args})"

    def summary(self) -> str:
        """The verdict: the defaults' rate, and the winner with its gain (or that none won)."""
        lines = [f"defaults {_fmt(self.default)}: {self.default_images_per_s:.0f} images/s"]
        if self.defaults_are_best:
            lines.append(f"the defaults are already the fastest here (nothing beat them by more "
                         f"than {self.tolerance:.0%}); no settings to change")
        else:
            lines.append(f"best {_fmt(self.best)}: {self.best_images_per_s:.0f} images/s, "
                         f"{self.gain:.2f}x the defaults")
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join([*(f"  {t}" for t in self.trials), self.summary()])


def _fmt(settings: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items())


def endless_batches(loader: Iterable) -> Iterator[Any]:
    """Batches across consecutive epochs, calling ``set_epoch`` where the loader has it.

    Shared with benchmarks/harness.py, so the tuner and the benchmark time the same way.
    """
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batches (store smaller than one batch?)")
        epoch += 1


def time_loader(loader: Iterable, *, warmup_batches: int, batches_per_round: int,
                rounds: int) -> tuple[float, list[float]]:
    """(first-batch seconds, images/s of each timed round) over consecutive epochs."""
    start = time.perf_counter()
    batches = endless_batches(loader)
    next(batches)
    first = time.perf_counter() - start
    for _ in range(warmup_batches):
        next(batches)
    rates = []
    for _ in range(rounds):
        start, images = time.perf_counter(), 0
        for _ in range(batches_per_round):
            images += len(next(batches)[1])
        rates.append(images / (time.perf_counter() - start))
    return first, rates


def _loader_factory(store: Any, loader_kwargs: dict[str, Any]) -> Callable[..., Any]:
    def make(**settings: int) -> Any:
        import fastload

        return fastload.Loader(store, **loader_kwargs, **settings)
    return make


class _Search:
    """Measures settings once each (a cache keyed by the settings) and keeps the trials."""

    def __init__(self, make_loader: Callable[..., Any], images_per_round: int, rounds: int,
                 warmup_batches: int, progress: Callable[[Trial], None] | None) -> None:
        self.make_loader, self.progress = make_loader, progress
        self.images_per_round, self.rounds, self.warmup = images_per_round, rounds, warmup_batches
        self.trials: dict[tuple[int, ...], Trial] = {}
        self.history: list[Trial] = []

    def measure(self, settings: dict[str, int]) -> Trial:
        """The first measurement of ``settings`` (measured now if it has none yet)."""
        key = tuple(settings[k] for k in SETTINGS)
        if key not in self.trials:
            self.trials[key] = self.run(settings)
        return self.trials[key]

    def run(self, settings: dict[str, int]) -> Trial:
        """Measure ``settings`` afresh (recorded in ``history``)."""
        trial = self._run(dict(settings))
        self.history.append(trial)
        if self.progress:
            self.progress(trial)
        return trial

    def _run(self, settings: dict[str, int]) -> Trial:
        loader = None
        try:
            with warnings.catch_warnings():  # more workers than cores is one of the candidates
                warnings.filterwarnings("ignore", message="This DataLoader will create")
                loader = self.make_loader(**settings)
                first, rates = time_loader(
                    loader, warmup_batches=self.warmup, rounds=self.rounds,
                    batches_per_round=max(2, math.ceil(self.images_per_round / settings["batch_size"])))
            return Trial(settings, statistics.median(rates), rates, first)
        except (RuntimeError, ValueError, OSError) as exc:  # e.g. out of memory: not a winner
            return Trial(settings, 0.0, [], 0.0, error=f"{type(exc).__name__}: {exc}")
        finally:
            if loader is not None and hasattr(loader, "close"):
                loader.close()  # stop its workers before the next trial measures
            del loader
            gc.collect()

    def sweep(self, base: dict[str, int], name: str, values: Sequence[int]) -> dict[str, int]:
        """The best of ``base`` with ``name`` set to each value (``base`` itself included)."""
        candidates = [base] + [{**base, name: v} for v in values if v != base[name]]
        trials = [self.measure(c) for c in candidates]
        return max(trials, key=lambda t: t.images_per_s).settings


def _candidates(values: Sequence[int] | None, fallback: list[int], limit: int | None = None) -> list[int]:
    chosen = sorted(set(values if values is not None else fallback))
    if not chosen or min(chosen) < 1:
        raise ValueError(f"candidate values must be positive integers, got {values}")
    return [v for v in chosen if limit is None or v <= limit] or chosen[:1]


def tune(store: Any, *, threads: Sequence[int] | None = None,
         batch_sizes: Sequence[int] | None = None, prefetch: Sequence[int] | None = None,
         images_per_round: int = 640, rounds: int = 3, warmup_batches: int = 3,
         tolerance: float = 0.05, progress: Callable[[Trial], None] | None = None,
         make_loader: Callable[..., Any] | None = None, **loader_kwargs: Any) -> TuneResult:
    """Search ``num_threads``, then ``batch_size``, then ``prefetch`` for the fastest Loader.

    Args:
        store: a store path (or open store) as ``fastload.Loader`` takes it.
        threads: thread counts to try (default: 1, half the cores, the cores, twice the cores).
        batch_sizes: batch sizes to try (default 32, 64, 128, 256, up to the store's size).
        prefetch: prefetch depths to try (default 1, 2, 4).
        images_per_round, rounds, warmup_batches: how long each trial runs.
        tolerance: a setting must beat the defaults by more than this fraction to win.
        progress: called with each Trial as it finishes (the CLI prints them).
        make_loader: ``make_loader(num_threads=, batch_size=, prefetch=)`` -> an iterable
            of (images, labels); default builds ``fastload.Loader(store, **loader_kwargs, ...)``.
        **loader_kwargs: other Loader arguments for every trial (backend, device, augment, ...).

    Returns:
        A TuneResult; ``result.best`` are keyword arguments for ``fastload.Loader``.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    loader_kwargs = {"shuffle": True, "drop_last": True, **loader_kwargs}
    make_loader = make_loader or _loader_factory(store, loader_kwargs)
    size, cores = _store_size(store), default_workers()
    search = _Search(make_loader, images_per_round, rounds, warmup_batches, progress)
    default = default_settings()
    if default["batch_size"] > size:
        raise ValueError(f"the store holds {size} records: fewer than one default batch "
                         f"of {default['batch_size']}, so there is nothing to time")
    if search.measure(default).error:  # fail fast: nothing else can be compared with it
        raise FastloadError(f"the Loader failed with its default settings {_fmt(default)}: "
                            f"{search.measure(default).error}")
    best = search.sweep(default, "num_threads",
                        _candidates(threads, [1, max(1, cores // 2), cores, 2 * cores]))
    best = search.sweep(best, "batch_size", _candidates(batch_sizes, [32, 64, 128, 256], size))
    best = search.sweep(best, "prefetch", _candidates(prefetch, [1, 2, 4]))
    return _result(search, default, best, tolerance, loader_kwargs)


def _result(search: _Search, default: dict[str, int], best: dict[str, int], tolerance: float,
            loader_kwargs: dict[str, Any]) -> TuneResult:
    base = search.measure(default)
    base_rate = winner_rate = base.images_per_s
    if best != default:
        # Measured again in the reverse order (A B, then B A): a machine that got busier or
        # quieter during the search favours neither side of the final comparison.
        winner_again, base_again = search.run(best), search.run(default)
        winner_rate = (search.measure(best).images_per_s + winner_again.images_per_s) / 2
        base_rate = (base.images_per_s + base_again.images_per_s) / 2
    if winner_rate <= base_rate * (1 + tolerance):
        best, winner_rate = default, base_rate  # within noise of the defaults: keep them
    return TuneResult(best=best, best_images_per_s=winner_rate, default=default,
                      default_images_per_s=base_rate, tolerance=tolerance,
                      trials=search.history, loader_kwargs=loader_kwargs)
