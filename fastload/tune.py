"""Find the fastest Loader settings for a store on this machine: ``fastload tune STORE``.

A short coordinate search: measure the Loader's defaults, then sweep ``num_threads`` at the
default batch size, on a GPU ``hw_decoder_load`` (DALI's split of JPEG decoding between the
hardware decoder and nvJPEG's CUDA path) at the best thread count, on the CPU with DALI
``host_workers`` (the host stage's ops in that many processes instead of threads: which is faster
depends on the cores and on what else holds the GIL, a model in the loop included), then
``batch_size``, then ``prefetch`` at the best of those. Every trial builds a Loader, draws
warm-up batches, then times a few rounds and keeps their median, so one slow round (another
process waking up) does not decide the winner.

With ``model="resnet18"`` (any torchvision model name) every batch also goes through a
training step of that model (``fastload.training.TrainingStep``), so the search finds what keeps the model
busiest rather than what loads fastest alone: on a GPU, decoding and training share it.

    >>> result = tune("train.lmdb")                             # doctest: +SKIP
    >>> print(result)                                           # doctest: +SKIP
    >>> loader = fastload.Loader("train.lmdb", **result.best)  # doctest: +SKIP

Batch size changes training, not just speed: pass ``batch_sizes=[yours]`` to keep it.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import FastloadError
from .training import TrainingStep, endless_batches
from .workers import default_workers

__all__ = ["Trial", "TuneResult", "tune", "default_settings", "time_loader", "HW_DECODER_LOADS"]

SETTINGS = ("num_threads", "batch_size", "prefetch")
# DALI's own default for the mixed decoders' hw_decoder_load: what the Loader's None means.
DALI_HW_DECODER_LOAD = 0.65
# Candidates on a GPU: 0 is nvJPEG's CUDA path only, 1 the hardware decoder only.
HW_DECODER_LOADS = (0.0, 0.3, 0.5, 0.65, 0.8, 0.9, 1.0)

Setting = int | float


def _loader_parameters() -> Any:
    import inspect

    from .loader import Loader

    return inspect.signature(Loader).parameters


def default_settings(*, gpu: bool = False, host: bool = False) -> dict[str, Setting]:
    """What ``fastload.Loader`` uses when these are not given (read from its signature).

    Args:
        gpu: also give ``hw_decoder_load`` (as the number DALI uses for the Loader's None).
        host: also give ``host_workers`` (0: the host stage on threads).
    """
    params = _loader_parameters()
    threads = params["num_threads"].default
    settings: dict[str, Setting] = {
        "num_threads": default_workers() if threads is None else threads,
        "batch_size": params["batch_size"].default, "prefetch": params["prefetch"].default}
    if gpu and "hw_decoder_load" in params:
        load = params["hw_decoder_load"].default
        settings["hw_decoder_load"] = DALI_HW_DECODER_LOAD if load is None else load
    if host and "host_workers" in params:
        settings["host_workers"] = params["host_workers"].default or 0
    return settings


def _store_facts(store: Any) -> tuple[int, int]:
    """(records, classes) of a store path or open store; classes from the labels (>= 1)."""
    if hasattr(store, "labels"):  # an open store (a list of shard paths also has a len)
        return len(store), _classes(store.labels)
    from .stores import open_store

    opened = open_store(store)
    try:
        return len(opened), _classes(opened.labels)
    finally:
        opened.close()


def _classes(labels: Any) -> int:
    return max(int(labels.max()) + 1, 1) if len(labels) else 1


@dataclass(frozen=True)
class Trial:
    """One measured setting: median images/s over the timed rounds, and each round's rate."""

    settings: dict[str, Setting]
    images_per_s: float
    rounds: list[float]
    first_batch_s: float
    error: str | None = None
    again: bool = False  # a second measurement of settings already measured (the final check)

    def __str__(self) -> str:
        outcome = f"{self.images_per_s:.0f} images/s" if self.error is None else f"failed: {self.error}"
        return f"{_fmt(self.settings)}: {outcome}{' (measured again)' if self.again else ''}"


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
        model: the torchvision model trained in the loop (images/s are then training
            images/s), or None.
        notes: settings that were not searched, and why (e.g. GPU-only ones on a CPU).
    """

    best: dict[str, Setting]
    best_images_per_s: float
    default: dict[str, Setting]
    default_images_per_s: float
    tolerance: float
    trials: list[Trial] = field(default_factory=list)
    loader_kwargs: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def gain(self) -> float:
        """Best over default throughput (1.0: no gain)."""
        return self.best_images_per_s / self.default_images_per_s if self.default_images_per_s else math.inf

    @property
    def defaults_are_best(self) -> bool:
        return self.best == self.default

    @property
    def unit(self) -> str:
        return f"training images/s ({self.model} in the loop)" if self.model else "images/s"

    def to_json(self) -> dict[str, Any]:
        return {"best": self.best, "best_images_per_s": self.best_images_per_s,
                "default": self.default, "default_images_per_s": self.default_images_per_s,
                "gain": self.gain, "defaults_are_best": self.defaults_are_best,
                "tolerance": self.tolerance, "loader_kwargs": self.loader_kwargs,
                "model": self.model, "notes": self.notes,
                "trials": [asdict(t) for t in self.trials]}

    def loader_call(self, path: str = "STORE") -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.best.items())
        return f"fastload.Loader({path!r}, {args})"

    def summary(self) -> str:
        """The verdict: the defaults' rate, and the winner with its gain (or that none won)."""
        lines = [f"defaults {_fmt(self.default)}: {self.default_images_per_s:.0f} {self.unit}"]
        if self.defaults_are_best:
            lines.append(f"the defaults are kept: no setting beat them by more than {self.tolerance:.0%} "
                         "(a setting measured twice counts with the median of all its rounds); no settings to change")
        else:
            lines.append(f"best {_fmt(self.best)}: {self.best_images_per_s:.0f} {self.unit}, "
                         f"{self.gain:.2f}x the defaults")
        return "\n".join(lines)

    def table(self) -> str:
        """Each setting once: every round of its measurements pooled (median, min-max), the
        defaults and the winner marked."""
        pooled: dict[tuple, list[Trial]] = {}
        for trial in self.trials:
            pooled.setdefault(tuple(sorted(trial.settings.items())), []).append(trial)
        lines = [f"{'settings':<56} {'median':>8} {'min-max':>13} {'runs':>4}"]
        for trials in pooled.values():
            settings = trials[0].settings
            rounds = _pooled_rounds(trials, settings)
            mark = " <- defaults" if settings == self.default else ""
            mark += " <- best" if settings == self.best and not self.defaults_are_best else ""
            if not rounds:
                lines.append(f"{_fmt(settings):<56} failed: {trials[0].error}{mark}")
                continue
            spread = f"{min(rounds):.0f}-{max(rounds):.0f}"
            lines.append(f"{_fmt(settings):<56} {statistics.median(rounds):>8.0f} {spread:>13} "
                         f"{len(trials):>4}{mark}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join([self.table(), *self.notes, self.summary()])


def _fmt(settings: dict[str, Setting]) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items())


def time_loader(loader: Iterable, *, warmup_batches: int, batches_per_round: int,
                rounds: int, step: TrainingStep | None = None) -> tuple[float, list[float]]:
    """(first-batch seconds, images/s of each timed round) over consecutive epochs.

    With ``step``, every batch after the first is trained on, and each round ends when the
    model has finished its work (so the rates are training images/s).
    """
    start = time.perf_counter()
    batches = endless_batches(loader)
    next(batches)
    first = time.perf_counter() - start
    for _ in range(warmup_batches):
        _consume(next(batches), step)
    rates = []
    for _ in range(rounds):
        start, images = time.perf_counter(), 0
        for _ in range(batches_per_round):
            images += _consume(next(batches), step)
        if step is not None:
            step.synchronize()
        rates.append(images / (time.perf_counter() - start))
    return first, rates


def _consume(batch: Any, step: TrainingStep | None) -> int:
    if step is not None:
        step(*batch)
    return len(batch[1])


def _loader_factory(store: Any, loader_kwargs: dict[str, Any]) -> Callable[..., Any]:
    def make(**settings: Setting) -> Any:
        import fastload

        return fastload.Loader(store, **loader_kwargs, **settings)
    return make


class _Search:
    """Measures settings once each (a cache keyed by the settings) and keeps the trials."""

    def __init__(self, make_loader: Callable[..., Any], images_per_round: int, rounds: int,
                 warmup_batches: int, progress: Callable[[Trial], None] | None,
                 step: TrainingStep | None = None) -> None:
        self.make_loader, self.progress, self.step = make_loader, progress, step
        self.images_per_round, self.rounds, self.warmup = images_per_round, rounds, warmup_batches
        self.trials: dict[tuple[tuple[str, Setting], ...], Trial] = {}
        self.history: list[Trial] = []

    def measure(self, settings: dict[str, Setting]) -> Trial:
        """The first measurement of ``settings`` (measured now if it has none yet)."""
        key = tuple(sorted(settings.items()))
        if key not in self.trials:
            self.trials[key] = self.run(settings)
        return self.trials[key]

    def run(self, settings: dict[str, Setting]) -> Trial:
        """Measure ``settings`` afresh (recorded in ``history``)."""
        trial = self._run(dict(settings))
        if tuple(sorted(settings.items())) in self.trials:
            trial = replace(trial, again=True)
        self.history.append(trial)
        if self.progress:
            self.progress(trial)
        return trial

    def _run(self, settings: dict[str, Setting]) -> Trial:
        loader = None
        try:
            with warnings.catch_warnings():  # more workers than cores is one of the candidates
                warnings.filterwarnings("ignore", message="This DataLoader will create")
                loader = self.make_loader(**settings)
                first, rates = time_loader(
                    loader, warmup_batches=self.warmup, rounds=self.rounds, step=self.step,
                    batches_per_round=max(2, math.ceil(self.images_per_round / settings["batch_size"])))
            return Trial(settings, statistics.median(rates), rates, first)
        except (RuntimeError, ValueError, OSError) as exc:  # e.g. out of memory: not a winner
            return Trial(settings, 0.0, [], 0.0, error=f"{type(exc).__name__}: {exc}")
        finally:
            if loader is not None and hasattr(loader, "close"):
                loader.close()  # stop its workers before the next trial measures
            del loader
            gc.collect()

    def sweep(self, base: dict[str, Setting], name: str, values: Sequence[Setting]) -> dict[str, Setting]:
        """The best of ``base`` with ``name`` set to each value (``base`` itself included)."""
        candidates = [base] + [{**base, name: v} for v in values if v != base[name]]
        trials = [self.measure(c) for c in candidates]
        return max(trials, key=lambda t: t.images_per_s).settings


def _candidates(values: Sequence[int] | None, fallback: list[int], limit: int | None = None) -> list[int]:
    chosen = sorted(set(values if values is not None else fallback))
    if not chosen or min(chosen) < 1:
        raise ValueError(f"candidate values must be positive integers, got {values}")
    return [v for v in chosen if limit is None or v <= limit] or chosen[:1]


def _decoder_loads(values: Sequence[float] | None) -> list[float]:
    chosen = sorted({float(v) for v in (values if values is not None else HW_DECODER_LOADS)})
    if not chosen or chosen[0] < 0 or chosen[-1] > 1:
        raise ValueError(f"hw_decoder_load candidates must lie in [0, 1], got {values}")
    return chosen


def _gpu_skip_reason(loader_kwargs: dict[str, Any]) -> str | None:
    """Why the GPU-only settings cannot matter for these Loader arguments (None: they can)."""
    device, backend = loader_kwargs.get("device", "auto"), loader_kwargs.get("backend", "auto")
    if device == "cpu":
        return "the Loader runs on the CPU (device='cpu')"
    if backend == "torch":
        return "backend='torch' decodes on the CPU"
    if device == "auto":
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device here (the Loader runs on the CPU)"
    if "hw_decoder_load" not in _loader_parameters():
        return "this fastload.Loader has no hw_decoder_load argument"
    return None


def _host_skip_reason(loader_kwargs: dict[str, Any]) -> str | None:
    """Why ``host_workers`` cannot matter for these Loader arguments (None: it can: DALI's host
    stage on the CPU)."""
    device, backend = loader_kwargs.get("device", "auto"), loader_kwargs.get("backend", "auto")
    if backend == "torch":
        return "backend='torch' runs its ops in worker processes already"
    import torch

    from .backends.factory import dali_available

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return "the Loader runs on the GPU (its ops run in DALI there)"
    if not dali_available():
        return "DALI is not installed (the torch backend serves)"
    if "host_workers" not in _loader_parameters():
        return "this fastload.Loader has no host_workers argument"
    return None


def tune(store: Any, *, threads: Sequence[int] | None = None,
         batch_sizes: Sequence[int] | None = None, prefetch: Sequence[int] | None = None,
         hw_decoder_loads: Sequence[float] | None = None, host_workers: Sequence[int] | None = None,
         model: str | None = None,
         images_per_round: int = 640, rounds: int = 3, warmup_batches: int = 3,
         tolerance: float = 0.05, progress: Callable[[Trial], None] | None = None,
         make_loader: Callable[..., Any] | None = None, **loader_kwargs: Any) -> TuneResult:
    """Search ``num_threads``, ``hw_decoder_load`` (GPU), ``host_workers`` (CPU, DALI),
    ``batch_size``, then ``prefetch``.

    Args:
        store: a store path (or open store) as ``fastload.Loader`` takes it.
        threads: thread counts to try (default: 1, half the cores, the cores, twice the cores).
        batch_sizes: batch sizes to try (default 32, 64, 128, 256, up to the store's size).
        prefetch: prefetch depths to try (default 1, 2, 4).
        hw_decoder_loads: on a GPU, the shares of JPEG decoding given to the hardware decoder
            to try (default ``HW_DECODER_LOADS``). Not searched when the Loader runs on the
            CPU (``result.notes`` says why).
        host_workers: on the CPU with DALI, host stage processes to try besides 0 (threads)
            (default: the best thread count). Not searched where the ops do not run in the
            host stage (``result.notes`` says why where counts were given), nor for ``[]``.
        model: a torchvision model name: train it on every batch (``TrainingStep``) and tune
            for training images/s. None tunes the loader alone.
        images_per_round, rounds, warmup_batches: how long each trial runs.
        tolerance: a setting must beat the defaults by more than this fraction to win.
        progress: called with each Trial as it finishes (the CLI prints them).
        make_loader: ``make_loader(**settings)`` -> an iterable of (images, labels); default
            builds ``fastload.Loader(store, **loader_kwargs, **settings)``.
        **loader_kwargs: other Loader arguments for every trial (backend, device, augment, ...).

    Returns:
        A TuneResult; ``result.best`` are keyword arguments for ``fastload.Loader``.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    loader_kwargs = {"shuffle": True, "drop_last": True, **loader_kwargs}
    make_loader = make_loader or _loader_factory(store, loader_kwargs)
    (size, classes), cores = _store_facts(store), default_workers()
    gpu_reason = _gpu_skip_reason(loader_kwargs)
    host_values = None if host_workers is None else [int(v) for v in host_workers if v]  # 0 is the default's
    host_reason = _host_skip_reason(loader_kwargs) if host_values != [] else "none given"
    notes = [f"hw_decoder_load not searched: {gpu_reason}"] if gpu_reason else []
    notes += [f"host_workers not searched: {host_reason}"] if host_reason and host_values else []  # as asked
    default = default_settings(gpu=gpu_reason is None, host=host_reason is None)
    if default["batch_size"] > size:
        raise ValueError(f"the store holds {size} records: fewer than one default batch "
                         f"of {default['batch_size']}, so there is nothing to time")
    step = _training_step(model, classes, loader_kwargs)
    search = _Search(make_loader, images_per_round, rounds, warmup_batches, progress, step)
    with _cudnn_benchmark(step is not None and step.gpu):
        if search.measure(default).error:  # fail fast: nothing else can be compared with it
            raise FastloadError(f"the Loader failed with its default settings {_fmt(default)}: "
                                f"{search.measure(default).error}")
        best = search.sweep(default, "num_threads",
                            _candidates(threads, [1, max(1, cores // 2), cores, 2 * cores]))
        if "hw_decoder_load" in default:
            best = search.sweep(best, "hw_decoder_load", _decoder_loads(hw_decoder_loads))
        if "host_workers" in default:
            best = search.sweep(best, "host_workers", _candidates(host_values, [int(best["num_threads"])]))
        best = search.sweep(best, "batch_size", _candidates(batch_sizes, [32, 64, 128, 256], size))
        best = search.sweep(best, "prefetch", _candidates(prefetch, [1, 2, 4]))
        result = _result(search, default, best, tolerance, loader_kwargs)
    result.model, result.notes = model, notes
    return result


def _training_step(model: str | None, classes: int, loader_kwargs: dict[str, Any]) -> TrainingStep | None:
    if model is None:
        return None
    # The model trains where the batches would go in a training script: the GPU when there is
    # one (a CPU loader's batches are copied there), else the CPU.
    device = "cpu" if loader_kwargs.get("device") == "cpu" else "auto"
    return TrainingStep(model, num_classes=classes, device=device)


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """cuDNN's autotuner on for the search (what a training script with fixed shapes sets),
    restored afterwards: the setting is process-wide."""
    if not enabled:
        yield
        return
    import torch

    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _pooled_rounds(trials: Sequence[Trial], settings: dict[str, Setting]) -> list[float]:
    """Every round of every measurement of ``settings``: what the table and the verdict use."""
    return [r for t in trials if t.settings == settings for r in t.rounds]


def _pooled_rate(search: _Search, settings: dict[str, Setting]) -> float:
    rounds = _pooled_rounds(search.history, settings)
    return statistics.median(rounds) if rounds else 0.0


def _result(search: _Search, default: dict[str, Setting], best: dict[str, Setting],
            tolerance: float, loader_kwargs: dict[str, Any]) -> TuneResult:
    if best != default:
        # Measured again in the reverse order (A B, then B A): a machine that got busier or
        # quieter during the search favours neither side of the final comparison.
        search.run(best)
        search.run(default)
    # Each side's rate is the median of all its rounds: the figure the result's table shows.
    winner_rate, base_rate = _pooled_rate(search, best), _pooled_rate(search, default)
    if winner_rate <= base_rate * (1 + tolerance):
        best, winner_rate = default, base_rate  # within noise of the defaults: keep them
    return TuneResult(best=best, best_images_per_s=winner_rate, default=default,
                      default_images_per_s=base_rate, tolerance=tolerance,
                      trials=search.history, loader_kwargs=loader_kwargs)
