"""``fastload.Loader``: a drop-in for ``torch.utils.data.DataLoader`` over a packed store.

    loader = fastload.Loader("train.lmdb", batch_size=256, augment="train", shuffle=True, seed=0)
    for epoch in range(epochs):
        for images, labels in loader:          # each pass is a new epoch, as with a DataLoader
            ...

Epochs, as with a shuffling DataLoader: every ``iter()`` starts a new epoch (new order, new
augmentation draws), whether the previous pass ran to its end or was broken off, unless the
epoch is pinned with ``set_epoch`` (the order is then a function of ``(seed, epoch, rank)``, as
with DistributedSampler) or a pass resumes after ``load_state_dict``. Random augmentation
parameters are drawn per sample from ``[seed, epoch, record]`` in both backends.

The sample order comes from an EpochPlan (seed, epoch, rank), or from the user's sampler; a
backend (DALI or PyTorch) turns the planned batches into finished tensors (fastload.output); the
batch stage runs the batch transforms on them on the device (fastload.transforms).
"""

from __future__ import annotations

import glob
import numbers
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .backends.base import Backend, BackendConfig, BatchStream
from .backends.factory import (
    BACKENDS,
    dali_available,
    make_backend,
    resolve_backend,
    resolve_device,
)
from .compat import PlanBatchSampler, PlanSampler, StoreDataset, refuse_dataset
from .distributed import local_device_index, rank_and_world
from .epochs import EpochState, Progress
from .loader_args import check_arguments, resolve_transforms, seed_of, subset_records
from .loss_sampling import LossSampling, LossTracker
from .ops import Op
from .ops.resolve import resolve_ops, store_mean_std
from .sampling import EpochPlan, SamplerPlan, make_plan
from .stats import LoaderStats, StallMeter
from .steering import LossSteering
from .stores import REGISTRY, Store, open_store
from .stores.files import FileStore
from .stores.remote import RemoteStore, shard_sizes_for_shuffle, start_prefetch
from .stores.urls import is_url
from .transforms.base import bind_transforms
from .transforms.stage import BatchStage
from .tta import resolve_views, split_for_views
from .workers import default_workers

__all__ = ["Loader", "BACKENDS", "dali_available"]


def _is_store_path(path: str) -> bool:
    return REGISTRY.is_store(path)  # a damaged store named like one is still a store


def _open_source(source: Any, labels: str | None, remote: dict[str, Any]) -> Store | FileStore:
    """A store, or the image files of a folder / glob / list read in place (a FileStore);
    ``remote``: the cache settings of a store at a URL."""
    if is_url(source):  # a store in object storage: never a local path
        return open_store(os.fspath(source), **{k: v for k, v in remote.items() if v is not None})
    if any(v is not None for v in remote.values()):
        raise TypeError("cache_dir=, cache_limit= and storage_options= apply to stores at URLs "
                        f"(s3://...), not to {source!r}")
    if isinstance(source, StoreDataset):
        if not np.array_equal(source.records, np.arange(len(source.store))):
            raise TypeError("this loader.dataset holds some records of its store: give them as "
                            "fastload.Loader(dataset.store, indices=dataset.records, ...)")
        return source.store
    if hasattr(source, "labels") and hasattr(source, "read"):
        return source
    if isinstance(source, torch.utils.data.Dataset):
        refuse_dataset(source)
    if labels is not None:
        return FileStore(source, labels)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        found = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
        if found and not all(_is_store_path(p) for p in found) and any(os.path.exists(p) for p in found):
            return FileStore(path)
        return open_store(source)
    paths = [os.fspath(p) for p in source]
    if paths and not all(_is_store_path(p) for p in paths):
        return FileStore(paths)
    return open_store(paths)


def _warn_skipped(store: FileStore) -> None:
    if store.skipped:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in store.skipped[:5])
        more = f" (and {len(store.skipped) - 5} more)" if len(store.skipped) > 5 else ""
        warnings.warn(f"fastload.Loader: {len(store.skipped)} of the files in {store.path} are not readable "
                      f"images and are left out: {reasons}{more}; the list is loader.skipped", stacklevel=3)


class _Pass:
    """The iterator of one pass over the data (what ``iter(loader)`` returns).

    The pass takes its epoch when its first batch is asked for, not at ``iter()``: code that
    makes the iterator before it sets the epoch (Lightning does: ``iter()`` in its setup, then
    ``sampler.set_epoch``) gets the epoch it set, as a DistributedSampler, read lazily, gives it;
    an iterator that is made and dropped unused (Lightning's iterability check) uses no epoch.
    """

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        self._stream: BatchStream | None = None
        self.started = False
        self.epoch, self.start, self.batches = -1, 0, []
        self.records: list[np.ndarray] = []  # each batch's store record indices
        self.done = 0
        self.progress = Progress(-1, 0)
        self._prefetch: Any = None  # a remote store's shard prefetcher (fastload.stores.remote)

    def _begin(self) -> None:
        loader = self._loader
        self.progress = loader._epochs.begin_pass()
        self.epoch, self.start = self.progress.epoch, self.progress.position
        loader._steer(self.epoch, self.start)  # issue 22: losses committed at an epoch's start reweight its plan
        self.batches = loader._epochs.pass_batches(self.progress)
        loader._meter.begin_epoch(self.epoch)
        self.started = True
        self.records = [loader._records_of(b) for b in self.batches]
        self._prefetch = start_prefetch(loader.store, self.records)  # remote stores: shards ahead of need
        self._stream = loader._get_backend().open_pass(self.records, self.epoch, following=loader._following())

    @property
    def position(self) -> int:
        """Batches of the epoch handed out so far (resumed ones included)."""
        return self.start + self.done

    @property
    def finished(self) -> bool:
        return self.started and self.done >= len(self.batches)

    def __iter__(self) -> _Pass:
        return self

    def __len__(self) -> int:
        if self.started:
            return len(self.batches)
        return self._loader._epochs.upcoming_length()

    def __next__(self) -> tuple[torch.Tensor, ...]:
        meter = self._loader._meter
        meter.entered()  # the stall meter (fastload.stats): time inside next() is the loop's wait
        if not self.started:
            self._begin()
        if self._stream is None or self.finished:
            self.close()
            meter.finish_epoch()
            raise StopIteration
        try:
            images, labels = next(self._stream)
        except BaseException:
            self.close()
            raise
        records = self.records[self.done]
        if self._loader._stage.active:
            try:
                with self._loader._stage_span():
                    images, labels = self._loader._stage(images, labels, self.epoch, self.position)
            except BaseException:  # the stream moved on: a later batch must not take this one's place
                self.close()
                raise
        if self._loader.yields_keys:
            labels = [self._loader.store.keys[int(r)] for r in records]
        self.done += 1
        self.progress.position = self.position
        if self._prefetch is not None:
            self._prefetch.advance(self.done)
        if self.finished:  # the plan is done: give the pipeline back for the next pass now
            self.close()
        meter.left(len(records))
        if self._loader.return_index:  # store record indices, a copy (the plan's arrays stay the plan's)
            return images, labels, torch.from_numpy(np.array(records, dtype=np.int64))
        return images, labels

    def close(self) -> None:
        """End the pass early (also done when the iterator is dropped)."""
        self.started = True  # closed before its first batch: it stays empty
        if self._prefetch is not None:
            self._prefetch.stop()
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release cleanly
            pass


class Loader:
    """Iterate ``(images, labels)`` batches of a packed store, like a DataLoader.

    Args:
        source: a store path (``.lmdb``/``.h5``), a glob or list of shards, an open store, or
            image files read in place, without packing: a folder (class sub-folders give labels),
            a glob, or a list of files. Unlabelled files yield ``(images, keys)``: their names.
        batch_size: samples per batch (per rank).
        augment: "train" (random-resized crop, horizontal flip, normalize), "eval" (resize the
            shorter side to size/0.875, center crop, normalize), a list of ops, a path to a
            JSON/YAML op list, a torchvision transform pipeline (``ops.from_torchvision``), or None
            (decoded images; only when all have one size).
        image_size: output side for the presets.
        shuffle: a new order every epoch, from (seed, epoch). Default False, as DataLoader.
        seed: seed of the order and of the augmentations (default: from ``generator``, else 0).
        drop_last: drop the last incomplete batch (and, across ranks, the uneven tail).
        sampler: None; "balanced" to draw every class equally often (with replacement); a torch
            Sampler (a DistributedSampler, say: it then decides this rank's order); or a
            sequence of record indices, taken in that order.
        indices: restrict the loader to these records (a fold, say), with the same shuffling,
            epochs, resume and sharding over them.
        weights: per-record sampling weights (drawn with replacement); overrides ``sampler``.
        num_samples: samples per epoch when sampling by weights (default: the store's size).
        backend: "dali", "torch", or "auto": DALI when installed, except on the CPU for a store
            DALI decodes nothing of (raw, ``.npy``, TIFF), which the torch backend's worker
            processes serve faster (``fastload.backends.factory.resolve_backend``).
        device: "cuda", "cpu", or "auto" (CUDA when available).
        num_threads: DALI threads or torch worker processes (default: ``num_workers``, else all cores).
        mean, std: normalization in 0..1 units; default ImageNet's; "store" uses the statistics
            gathered when the store was packed.
        output_dtype: "float32", "float16" or "uint8" (uint8 is not normalized).
        layout: "NCHW" or "NHWC".
        prefetch: batches prepared ahead (DALI on the CPU with the host stage decodes one more:
            the host stage takes each batch on the share of the threads its ops need).
        verify: check each record's checksum when read.
        rank, world_size: shard for distributed training; default from torch.distributed.
        hw_decoder_load: on the GPU, the share (0..1) of JPEG decoding given to the hardware
            JPEG decoder (A100/H100), the rest to nvJPEG's CUDA path; None: DALI's default.
        batch_transforms: functions ``f(images, labels, rng) -> (images, labels)`` run on each
            whole batch on the device (fastload.transforms: Mixup, CutMix, RandomErasing), or a
            JSON/YAML file of them.
        feed_workers: DALI backend: processes that read records for the pipeline (default: one
            per four cores, 1 to 4).
        host_workers: DALI backend on the CPU: processes that run the ops after DALI's decode
            (default 0: ``num_threads`` threads of this process run them). Processes hold this
            process's GIL 2-3x less per image, for one copy of each decoded image into shared
            memory (2 cores: up to ~11% fewer images a second) and ~300 MB a worker
            (``fastload.backends.dali.host_pool``; ``fastload tune`` compares both).
        num_workers, pin_memory, persistent_workers, prefetch_factor, generator: DataLoader's
            keywords: ``num_workers`` sets ``num_threads``, ``prefetch_factor`` sets ``prefetch``,
            ``generator`` the seed; workers always persist; ``pin_memory`` pins the torch
            backend's CPU batches. Other DataLoader keywords are accepted at their defaults.
        labels: with a folder ``source``: a CSV naming its files (and labels), as
            ``fastload pack --labels``; rows keep the CSV's order.
        tta: test-time views ("identity", "hflip", "vflip", "five-crop", "ten-crop", or fixed
            ops; a list, or one of them): batches are then ``(B, V, C, H, W)`` (fastload.tta).
        return_index: yield ``(images, labels, indices)``: ``indices`` the batch's store record
            indices (int64, CPU), the same whatever the backend, rank, epoch or resume;
            ``loader.dataset.describe(indices)`` gives their paths, labels and metadata.
        log_every: log the stall meter's one-line summary (``loader.stats()``) every this many
            epochs, to the ``fastload.stats`` logger at INFO level.
        loss_sampling: a ``fastload.LossSampling`` (or True for its defaults): per-sample losses given
            to ``loader.sampler.update(indices, losses)`` reweight the following epochs' draws, and
            are kept for ``loader.audit`` (fastload.loss_sampling).
        cache_dir, cache_limit, storage_options: for a store at a URL (``s3://bucket/x.lmdb``):
            the node's shard cache folder, the bytes it may hold ("200GB"; when smaller than the
            store, ``shuffle`` reads a window of shards at a time: sampling.shard_window_order), and
            fsspec's options (endpoint_url, key, secret; default: the usual environment).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str] | Store,
        *,
        batch_size: int = 64,
        augment: str | Sequence[Op] | Any | None = "train",
        image_size: int = 224,
        shuffle: bool | None = False,
        seed: int | None = None,
        drop_last: bool = False,
        sampler: Any = None,
        indices: Sequence[int] | np.ndarray | None = None,
        weights: Sequence[float] | np.ndarray | None = None,
        num_samples: int | None = None,
        backend: str = "auto",
        device: str = "auto",
        num_threads: int | None = None,
        mean: Sequence[float] | str | None = None,
        std: Sequence[float] | None = None,
        output_dtype: str = "float32",
        layout: str = "NCHW",
        prefetch: int = 2,
        verify: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        hw_decoder_load: float | None = None,
        batch_transforms: Sequence[Callable[..., Any]] | str | os.PathLike[str] | None = None,
        feed_workers: int | None = None,
        host_workers: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        generator: torch.Generator | None = None,
        labels: str | os.PathLike[str] | None = None,
        tta: Sequence[str | Op] | str | None = None,
        return_index: bool = False,
        log_every: int | None = None,
        loss_sampling: LossSampling | bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_limit: int | str | None = None,
        storage_options: dict[str, Any] | None = None,
        **dataloader_kwargs: Any,
    ) -> None:
        check_arguments(batch_size=batch_size, output_dtype=output_dtype, layout=layout,
                        hw_decoder_load=hw_decoder_load, shuffle=shuffle, sampler=sampler, indices=indices,
                        dataloader_kwargs=dataloader_kwargs)
        seed = seed_of(seed, generator)
        self.store = _open_source(source, None if labels is None else os.fspath(labels),
                                  {"cache_dir": cache_dir, "cache_limit": cache_limit, "storage_options": storage_options})
        self.skipped = list(getattr(self.store, "skipped", []))
        if isinstance(self.store, FileStore):
            _warn_skipped(self.store)
        # unpacked, unlabelled files: batches carry the files' names instead of labels
        self.yields_keys = isinstance(self.store, FileStore) and bool((self.store.labels < 0).all())
        if isinstance(mean, str) and mean == "store":
            mean, std = store_mean_std(self.store)
        self.ops = resolve_ops(augment, image_size, mean, std)
        self.records = subset_records(indices, len(self.store))
        labels = np.asarray(self.store.labels)[self.records] if self.records is not None else self.store.labels
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self._user_sampler = sampler if sampler is not None and not isinstance(sampler, str) else None
        self.plan: EpochPlan | SamplerPlan = make_plan(
            labels, store_size=len(self.store), batch_size=batch_size, shuffle=bool(shuffle), seed=seed,
            drop_last=drop_last, rank=self.rank, world_size=self.world_size, sampler=sampler,
            weights=weights, num_samples=num_samples, shard_sizes=shard_sizes_for_shuffle(self.store))
        # issue 22, what training sees: the stall meter, record indices, loss-driven sampling
        self.return_index = bool(return_index)
        self._meter = StallMeter(self.rank, log_every=log_every)
        self._steering = LossSteering.build(loss_sampling, self.plan, len(self.store), self.records)
        self.device = resolve_device(device)
        self.backend_name = resolve_backend(backend, device=self.device, store=self.store, ops=self.ops)
        if num_threads is None:
            num_threads = num_workers if num_workers is not None else default_workers()
        self.num_workers, self.pin_memory = num_threads, bool(pin_memory)
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        self.generator, self.drop_last, self.seed = generator, drop_last, seed
        self.config = BackendConfig(
            batch_size=batch_size, device=self.device,
            device_id=local_device_index() if self.device == "cuda" else 0,
            # per-sample draws from (seed, epoch, record) on any rank: a resume may change the world size
            num_threads=num_threads, seed=seed, output_dtype=output_dtype,
            layout=layout, prefetch=prefetch_factor or prefetch, verify=verify,
            channels=self.store.channels, hw_decoder_load=hw_decoder_load, views=tuple(resolve_views(tta)),
        )
        if self.config.views:
            split_for_views(self.ops, self.config.views)  # a five-crop needs a final crop: say so now
        self.batch_transforms = bind_transforms(resolve_transforms(batch_transforms), len(self.store.classes) or None)
        mixing = [type(t).__name__ for t in self.batch_transforms if hasattr(t, "num_classes")]
        if mixing and len(labels) and int(np.min(labels)) < 0:
            raise ValueError(f"{mixing[0]} mixes labels, but {self.store.path} has unlabelled records (label -1); "
                             "give indices= of labelled records, or leave label-mixing transforms out")
        self._feed_workers = feed_workers
        if host_workers is not None and (isinstance(host_workers, bool) or not isinstance(host_workers, numbers.Integral)
                                         or host_workers < 0):
            raise ValueError(f"host_workers must be a whole number >= 0 (0: the host stage on threads), "
                             f"got {host_workers!r}")
        self._host_workers = int(host_workers or 0)
        self._backend: Backend | None = None
        self._stage_cache: BatchStage | None = None
        self._epochs = EpochState(self.plan, rank=self.rank, world_size=self.world_size, sampler=self._user_sampler)
        self._passes: weakref.WeakSet[_Pass] = weakref.WeakSet()  # live passes, closed by close()

    # --- DataLoader-like surface -----------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch on this rank (equal on every rank)."""
        return len(self.plan)

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def dataset(self) -> StoreDataset:
        """The data as a map-style Dataset of ``(image, label)`` items (see StoreDataset)."""
        return StoreDataset(self.store, self.ops, records=self.records, seed=self.config.seed,
                            layout=self.config.layout, output_dtype=self.config.output_dtype,
                            channels=self.config.channels)

    @property
    def sampler(self) -> Any:
        """The sampler given, or a view of the plan with ``set_epoch`` and ``len``."""
        return self._user_sampler if self._user_sampler is not None else PlanSampler(self)

    @property
    def batch_sampler(self) -> PlanBatchSampler:
        return PlanBatchSampler(self)

    def set_epoch(self, epoch: int) -> None:
        """Pin the epoch whose order and augmentations every following pass uses (as
        DistributedSampler.set_epoch). Without it, each pass starts the next epoch."""
        self._epochs.pin(epoch)
        set_epoch = getattr(self._user_sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(int(epoch))

    def _get_backend(self) -> Backend:
        if self._backend is None:
            self._backend = make_backend(self.backend_name, self.store, self.ops, self.config,
                                         feed_workers=self._feed_workers, host_workers=self._host_workers,
                                         pin_memory=self.pin_memory)
            self._backend.clock = self._meter.clock  # type: ignore[attr-defined]  # stages time into the meter
        return self._backend

    @property
    def _stage(self) -> BatchStage:
        if self._stage_cache is None:
            # batch-wise draws (mixup) differ per rank, as each rank's batches differ
            self._stage_cache = BatchStage(transforms=self.batch_transforms, seed=self.config.seed + 1_000_003 * self.rank,
                                           layout=self.config.layout)
        return self._stage_cache

    def _records_of(self, batch: np.ndarray) -> np.ndarray:
        return batch if self.records is None or isinstance(self.plan, SamplerPlan) else self.records[batch]

    def _samples_per_epoch(self) -> int:
        if isinstance(self.plan, SamplerPlan):
            return self.plan.samples
        return self.plan.samples_per_rank

    def _next_pass(self) -> tuple[int, int]:
        """(epoch, first batch) of the pass that ``iter()`` starts now."""
        return self._epochs.next_pass()

    def _following(self) -> Callable[[int], list[np.ndarray]] | None:
        """The batches of a later epoch from its start (the passes a backend may start on as one
        ends), from fastload's own plan only: a user's sampler is not run ahead of time, and loss
        steering or a remote store's shard window plan each epoch as it begins."""
        if self._steering is not None or not isinstance(self.plan, EpochPlan) or isinstance(self.store, RemoteStore):
            return None
        return self._epoch_records

    def _epoch_records(self, epoch: int) -> list[np.ndarray]:
        return [self._records_of(b) for b in self.plan.batches(epoch)]

    def _upcoming_batches(self) -> list[np.ndarray]:
        return [self._records_of(b) for b in self._epochs.planned_batches(*self._next_pass())[0]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        live = _Pass(self)  # takes its epoch (and starts the backend) at its first batch
        self._passes.add(live)
        return live

    # --- what training sees (issue 22: fastload.stats, fastload.loss_sampling, fastload.audit) ---
    def stats(self, total: bool = False) -> LoaderStats:
        """The stall meter on this rank: the epoch in progress (or the last one), or with
        ``total`` every epoch so far. ``fastload.stats.report(loader)`` gathers every rank's."""
        return self._meter.stats(total=total)

    def _stage_span(self) -> Any:
        clock = self._meter.clock
        return clock.gpu_span("batch_stage", self.device) if self.device == "cuda" else clock.span("batch_stage")

    def _steering_for(self, what: str) -> LossSteering:
        if self._steering is None:
            raise ValueError(f"{what} needs the per-record losses: build the Loader with "
                             "loss_sampling=fastload.LossSampling() (steer=False to only record them)")
        return self._steering

    def _tracker(self, what: str) -> LossTracker:
        return self._steering_for(what).tracker

    def _set_plan(self, plan: EpochPlan | None) -> None:
        if plan is not None:
            self.plan = self._epochs.plan = plan

    def _steer(self, epoch: int, start: int) -> None:
        """At an epoch's start, the plan the losses given so far steer (fastload.steering)."""
        if self._steering is not None:
            self._set_plan(self._steering.begin_epoch(epoch, start))

    def _committed(self, what: str) -> LossSteering:
        """The losses given since the epoch began committed (a collective under torch.distributed:
        call it on every rank, between epochs)."""
        steering = self._steering_for(what)
        self._set_plan(steering.commit())
        return steering

    def audit(self, path: str | os.PathLike[str] | None = None, top: int | None = None) -> list[dict[str, Any]]:
        """The label audit: records ranked by how persistently their loss stays high (with path,
        label, class and metadata); written as CSV to ``path`` when given (fastload.audit).
        Call it between epochs, on every rank under torch.distributed: it commits the losses
        given since the epoch began, as the next epoch's start would."""
        return self._committed("loader.audit()").audit(self.store, path, top)

    def save_loss_history(self, path: str | os.PathLike[str]) -> str:
        """Write the per-record loss history for ``fastload audit PATH`` (a NumPy archive, no pickle)."""
        return self._committed("loader.save_loss_history()").save_history(self.store, path)

    # --- mid-epoch resume --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: resuming from it yields exactly the remaining batches of the
        epoch in progress (or, after a finished pass, starts the next epoch). With several live
        iterators, the one started last is the one saved (as torchdata's StatefulDataLoader)."""
        state = self._epochs.state_dict()
        if self._steering is not None:  # the weights this epoch was planned with, and the losses since
            state["losses"] = self._steering.tracker.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``: the next pass yields the same epoch's unseen batches."""
        self._epochs.load_state_dict(state)
        if "losses" in state:
            steering = self._steering_for("resuming a state with loss sampling")
            steering.tracker.load_state_dict(state["losses"])
            self._set_plan(steering.plan())

    def close(self) -> None:
        """Stop worker processes and pipelines."""
        for live in list(self._passes):
            live.close()
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to release cleanly
            pass

    def __repr__(self) -> str:
        return (f"Loader({self.store.path!r}, batch_size={self.batch_size}, backend={self.backend_name!r}, "
                f"device={self.device!r}, rank={self.rank}/{self.world_size}, batches={len(self)})")
