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
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .backends.base import Backend, BackendConfig, BatchStream
from .compat import (
    PlanBatchSampler,
    PlanSampler,
    StoreDataset,
    check_dataloader_kwargs,
    refuse_dataset,
)
from .distributed import local_device_index, rank_and_world
from .errors import StoreFormatError
from .ops import Op, preset
from .output import LAYOUTS, OUTPUT_DTYPES
from .parallel import default_workers
from .sampling import EpochPlan, SamplerPlan, balanced_weights
from .stores import Store, open_store
from .stores import _sniff as sniff_store
from .stores.files import FileStore
from .transforms.base import bind_transforms, transforms_from_config
from .transforms.stage import BatchStage
from .tta import resolve_views, split_for_views

__all__ = ["Loader", "BACKENDS", "dali_available"]

BACKENDS = ("auto", "dali", "torch")
_STATE_VERSION = 2


def dali_available() -> bool:
    """True when NVIDIA DALI imports (the ``cuda13``/``cuda12`` extras)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "dali" if dali_available() else "torch"
    if backend == "dali" and not dali_available():
        from .errors import MissingExtraError

        raise MissingExtraError("nvidia-dali", "cuda13", "backend='dali'")
    return backend


def _resolve_ops(augment: str | Sequence[Op] | None, image_size: int, mean: Any, std: Any) -> list[Op]:
    if augment is None:
        return []
    if isinstance(augment, (str, os.PathLike)):
        text = os.fspath(augment)
        if text.endswith((".json", ".yaml", ".yml")):
            from .ops import config

            return config.from_config(text)
        return preset(text, image_size, mean, std)
    ops = list(augment)
    for op in ops:
        if not isinstance(op, Op):
            raise TypeError(f"augment entries must be fastload ops, got {op!r}")
    return ops


def _store_mean_std(store: Store) -> tuple[Any, Any]:
    stats = store.header.stats
    if not stats.get("mean"):
        raise ValueError(f"{store.path} has no pixel statistics; pass mean=/std= explicitly")
    return tuple(stats["mean"]), tuple(stats["std"])


def _is_store_path(path: str) -> bool:
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "data.mdb"))
    if path.lower().endswith((".lmdb", ".h5", ".hdf5")):  # a damaged store is still a store
        return True
    try:
        sniff_store(path)
    except (StoreFormatError, OSError):
        return False
    return True


def _open_source(source: Any, labels: str | None) -> Store | FileStore:
    """A store, or the image files of a folder / glob / list read in place (a FileStore)."""
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


def _subset(indices: Any, count: int) -> np.ndarray | None:
    if indices is None:
        return None
    records = np.asarray(indices, dtype=np.int64).reshape(-1)
    if records.size == 0:
        raise ValueError("indices= is empty: give at least one record index")
    bad = records[(records < -count) | (records >= count)]
    if bad.size:
        raise IndexError(f"indices= holds record {int(bad[0])}, outside 0..{count - 1} of the store")
    return records % count


def _transforms(value: Any) -> list[Callable[..., Any]]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return transforms_from_config(value)
    transforms = list(value)
    for t in transforms:
        if not callable(t):
            raise TypeError(f"batch_transforms entries are callables f(images, labels, rng), got {t!r}")
    return transforms


@dataclass
class _Progress:
    """How far the latest pass got: its epoch and the batches of it handed out so far."""

    epoch: int
    position: int


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
        self.done = 0
        self.progress = _Progress(-1, 0)

    def _begin(self) -> None:
        loader = self._loader
        self.epoch, self.start = loader._next_pass()
        loader._resume = None
        loader._next_epoch = self.epoch + 1
        self.batches = loader.plan.batches(self.epoch, self.start)
        self.progress = _Progress(self.epoch, self.start)
        loader._progress = self.progress
        self.started = True
        self._stream = loader._get_backend().open_pass([loader._records_of(b) for b in self.batches], self.epoch)

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
        return len(self._loader.plan) - self._loader._next_pass()[1]

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.started:
            self._begin()
        if self._stream is None or self.finished:
            self.close()
            raise StopIteration
        try:
            images, labels = next(self._stream)
        except BaseException:
            self.close()
            raise
        records = self._loader._records_of(self.batches[self.done])
        if self._loader._stage.active:
            try:
                images, labels = self._loader._stage(images, labels, self.epoch, self.position)
            except BaseException:  # the stream moved on: a later batch must not take this one's place
                self.close()
                raise
        if self._loader.yields_keys:
            labels = [self._loader.store.keys[int(r)] for r in records]
        self.done += 1
        self.progress.position = self.position
        if self.finished:  # the plan is done: give the pipeline back for the next pass now
            self.close()
        return images, labels

    def close(self) -> None:
        """End the pass early (also done when the iterator is dropped)."""
        self.started = True  # closed before its first batch: it stays empty
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
            JSON/YAML op list, or None (decoded images; only when all have one size).
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
        backend: "dali", "torch", or "auto" (DALI when installed).
        device: "cuda", "cpu", or "auto" (CUDA when available).
        num_threads: DALI threads or torch worker processes (default: ``num_workers``, else all cores).
        mean, std: normalization in 0..1 units; default ImageNet's; "store" uses the statistics
            gathered when the store was packed.
        output_dtype: "float32", "float16" or "uint8" (uint8 is not normalized).
        layout: "NCHW" or "NHWC".
        prefetch: batches prepared ahead.
        verify: check each record's checksum when read.
        rank, world_size: shard for distributed training; default from torch.distributed.
        hw_decoder_load: on the GPU, the share (0..1) of JPEG decoding given to the hardware
            JPEG decoder (A100/H100), the rest to nvJPEG's CUDA path; None: DALI's default.
        batch_transforms: functions ``f(images, labels, rng) -> (images, labels)`` run on each
            whole batch on the device (fastload.transforms: Mixup, CutMix, RandomErasing), or a
            JSON/YAML file of them.
        feed_workers: DALI backend: processes that read records for the pipeline (default: one
            per four cores, 1 to 4).
        num_workers, pin_memory, persistent_workers, prefetch_factor, generator: DataLoader's
            keywords: ``num_workers`` sets ``num_threads``, ``prefetch_factor`` sets ``prefetch``,
            ``generator`` the seed; workers always persist; ``pin_memory`` pins the torch
            backend's CPU batches. Other DataLoader keywords are accepted at their defaults.
        labels: with a folder ``source``: a CSV naming its files (and labels), as
            ``fastload pack --labels``; rows keep the CSV's order.
        tta: test-time views ("identity", "hflip", "vflip", "five-crop", "ten-crop", or fixed
            ops): batches are then ``(B, V, C, H, W)`` (fastload.tta).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str] | Store,
        *,
        batch_size: int = 64,
        augment: str | Sequence[Op] | None = "train",
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
        num_workers: int | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        generator: torch.Generator | None = None,
        labels: str | os.PathLike[str] | None = None,
        tta: Sequence[str | Op] | None = None,
        **dataloader_kwargs: Any,
    ) -> None:
        check_dataloader_kwargs(dataloader_kwargs)
        if output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {sorted(OUTPUT_DTYPES)}, got {output_dtype!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if hw_decoder_load is not None and not 0.0 <= hw_decoder_load <= 1.0:
            raise ValueError(f"hw_decoder_load must lie in [0, 1], got {hw_decoder_load}")
        if batch_size is None or int(batch_size) < 1:
            raise TypeError(f"Loader() needs batch_size >= 1, got {batch_size!r} (batches are always collated)")
        if shuffle and sampler is not None and not isinstance(sampler, str):
            raise ValueError("sampler option is mutually exclusive with shuffle (as in DataLoader)")
        if indices is not None and sampler is not None and not isinstance(sampler, str):
            raise ValueError("give indices= or a sampler object, not both (a sampler names its own records)")
        if isinstance(sampler, str) and sampler != "balanced":
            raise ValueError(f"sampler must be 'balanced', a Sampler or a sequence of indices, got {sampler!r}")
        if seed is None:
            seed = int(generator.initial_seed()) % (1 << 62) if generator is not None else 0
        self.store = _open_source(source, None if labels is None else os.fspath(labels))
        self.skipped = list(getattr(self.store, "skipped", []))
        if isinstance(self.store, FileStore):
            _warn_skipped(self.store)
        # unpacked, unlabelled files: batches carry the files' names instead of labels
        self.yields_keys = isinstance(self.store, FileStore) and bool((self.store.labels < 0).all())
        if mean == "store":
            mean, std = _store_mean_std(self.store)
        self.ops = _resolve_ops(augment, image_size, mean, std)
        self.records = _subset(indices, len(self.store))
        labels = np.asarray(self.store.labels)[self.records] if self.records is not None else self.store.labels
        if sampler == "balanced" and weights is None:
            weights = balanced_weights(labels)
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self._user_sampler = sampler if sampler is not None and not isinstance(sampler, str) else None
        if self._user_sampler is not None and weights is None:
            self.plan: EpochPlan | SamplerPlan = SamplerPlan(self._user_sampler, len(self.store), batch_size, drop_last)
        else:
            self.plan = EpochPlan(
                num_records=len(labels), batch_size=batch_size, shuffle=bool(shuffle), seed=seed,
                drop_last=drop_last, rank=self.rank, world_size=self.world_size,
                weights=None if weights is None else np.asarray(weights, dtype=np.float64),
                num_samples=num_samples,
            )
        self.device = _resolve_device(device)
        self.backend_name = _resolve_backend(backend)
        if num_threads is None:
            num_threads = num_workers if num_workers is not None else default_workers()
        self.num_workers, self.pin_memory = num_threads, bool(pin_memory)
        self.persistent_workers, self.prefetch_factor = persistent_workers, prefetch_factor
        self.generator, self.drop_last, self.seed = generator, drop_last, seed
        self.config = BackendConfig(
            batch_size=batch_size, device=self.device,
            device_id=local_device_index() if self.device == "cuda" else 0,
            num_threads=num_threads, seed=seed + 1_000_003 * self.rank, output_dtype=output_dtype,
            layout=layout, prefetch=prefetch_factor or prefetch, verify=verify,
            channels=self.store.channels, hw_decoder_load=hw_decoder_load, views=tuple(resolve_views(tta)),
        )
        if self.config.views:
            split_for_views(self.ops, self.config.views)  # a five-crop needs a final crop: say so now
        self.batch_transforms = bind_transforms(_transforms(batch_transforms), len(self.store.classes) or None)
        mixing = [type(t).__name__ for t in self.batch_transforms if hasattr(t, "num_classes")]
        if mixing and len(labels) and int(np.min(labels)) < 0:
            raise ValueError(f"{mixing[0]} mixes labels, but {self.store.path} has unlabelled records (label -1); "
                             "give indices= of labelled records, or leave label-mixing transforms out")
        self._feed_workers = feed_workers
        self._backend: Backend | None = None
        self._stage_cache: BatchStage | None = None
        self._next_epoch = 0
        self._pinned: int | None = None  # set_epoch: every pass follows this epoch's order
        self._resume: tuple[int, int] | None = None  # load_state_dict: (epoch, batch) to continue
        self._progress: _Progress | None = None  # the latest pass's (kept when it is dropped)
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
        self._pinned = int(epoch)
        if self._resume is not None and self._resume[0] != self._pinned:
            self._resume = None
        set_epoch = getattr(self._user_sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(int(epoch))

    def _get_backend(self) -> Backend:
        if self._backend is None:
            if self.backend_name == "dali":
                from .backends.dali.backend import DaliBackend

                self._backend = DaliBackend(self.store, self.ops, self.config, feed_workers=self._feed_workers)
            else:
                from .backends.torch.backend import TorchBackend

                self._backend = TorchBackend(self.store, self.ops, self.config, pin_memory=self.pin_memory)
        return self._backend

    @property
    def _stage(self) -> BatchStage:
        if self._stage_cache is None:
            self._stage_cache = BatchStage(transforms=self.batch_transforms, seed=self.config.seed,
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
        if self._resume is not None:
            return self._resume
        if self._pinned is not None:
            return self._pinned, 0
        # A user's sampler that was moved to an epoch (DistributedSampler.set_epoch, as the
        # ImageNet example calls it) sets the augmentations' epoch too, so a resumed run redraws them.
        sampler_epoch = getattr(self._user_sampler, "epoch", 0)
        if isinstance(sampler_epoch, int) and sampler_epoch > 0:
            return sampler_epoch, 0
        return self._next_epoch, 0

    def _upcoming_batches(self) -> list[np.ndarray]:
        epoch, start = self._next_pass()
        return [self._records_of(b) for b in self.plan.batches(epoch, start)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        live = _Pass(self)  # takes its epoch (and starts the backend) at its first batch
        self._passes.add(live)
        return live

    # --- mid-epoch resume --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: resuming from it yields exactly the remaining batches of the
        epoch in progress (or, after a finished pass, starts the next epoch). With several live
        iterators, the one started last is the one saved (as torchdata's StatefulDataLoader)."""
        latest = self._progress
        if self._resume is not None or latest is None:
            epoch, batch = self._next_pass()
        elif latest.position >= len(self.plan):
            epoch, batch = latest.epoch + 1, 0
        else:
            epoch, batch = latest.epoch, latest.position
        return {
            "version": _STATE_VERSION, "epoch": epoch, "batch": batch,
            "seed": self.plan.seed, "num_records": self.plan.num_records,
            "batch_size": self.plan.batch_size, "rank": self.rank, "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``: the next pass yields the same epoch's unseen batches."""
        for key in ("seed", "num_records", "batch_size", "world_size"):
            mine = getattr(self.plan, key, None) if key != "world_size" else self.world_size
            if state.get(key) != mine:
                raise ValueError(f"cannot resume: the saved {key} is {state.get(key)}, this loader's "
                                 f"is {mine}; build the loader with the same settings")
        epoch, batch = int(state["epoch"]), int(state["batch"])
        self._pinned = None
        self._next_epoch = epoch
        self._resume = (epoch, batch) if batch > 0 else None

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
