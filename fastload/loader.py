"""``fastload.Loader``: a drop-in for ``torch.utils.data.DataLoader`` over a packed store.

    loader = fastload.Loader("train.lmdb", batch_size=256, augment="train", shuffle=True, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels in loader:
            ...

The sample order comes from an EpochPlan (seed, epoch, rank): the same for every backend
and worker count. A backend (DALI or PyTorch) turns the planned batches into tensors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .backends.base import LAYOUTS, OUTPUT_DTYPES, Backend, BackendConfig
from .distributed import local_device_index, rank_and_world
from .ops import Op, preset
from .parallel import default_workers
from .sampling import EpochPlan, balanced_weights
from .stores import Store, open_store

__all__ = ["Loader", "BACKENDS", "dali_available"]

BACKENDS = ("auto", "dali", "torch")
_STATE_VERSION = 1


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


def _dali_decodes(store: Store) -> bool:
    """Whether DALI's image decoders read every record: not .npy arrays (stacked channel files),
    float pixels, or images of other than 1 or 3 channels (those need backend='torch', or a
    store packed with --store raw, whose arrays DALI takes as they are)."""
    if store.header.payload == "raw":
        return True
    return all("npy" not in s.header.encodings and "float32" not in s.header.dtypes
               and s.header.channels in (1, 3) for s in getattr(store, "shards", [store]))


def _resolve_backend(backend: str, store: Store) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "dali" if dali_available() and _dali_decodes(store) else "torch"
    if backend == "dali" and not dali_available():
        from .errors import MissingExtraError

        raise MissingExtraError("nvidia-dali", "cuda13", "backend='dali'")
    if backend == "dali" and not _dali_decodes(store):
        raise ValueError(f"{store.path}: DALI cannot decode this store's records (arrays, or "
                         f"{store.channels}-channel images); use backend='torch', or re-pack it "
                         "with --store raw (decoded arrays, which DALI reads as they are)")
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


class Loader:
    """Iterate ``(images, labels)`` batches of a packed store, like a DataLoader.

    Args:
        source: a store path (``.lmdb``/``.h5``), a glob or list of shards, or an open store.
        batch_size: samples per batch (per rank).
        augment: "train" (random-resized crop, horizontal flip, normalize), "eval" (resize the
            shorter side to size/0.875, center crop, normalize), a list of ops, a path to a
            JSON/YAML op list, or None (decoded images; only when all have one size).
        image_size: output side for the presets.
        shuffle: reshuffle every epoch from (seed, epoch). Default False, as DataLoader.
        seed: seed of the order and of the augmentations.
        drop_last: drop the last incomplete batch (and, across ranks, the uneven tail).
        sampler: None, or "balanced" to draw every class equally often (with replacement).
        weights: per-record sampling weights (drawn with replacement); overrides ``sampler``.
        num_samples: samples per epoch when sampling by weights (default: the store's size).
        backend: "dali", "torch", or "auto" (DALI when installed).
        device: "cuda", "cpu", or "auto" (CUDA when available).
        num_threads: DALI threads or torch worker processes (default: all cores).
        mean, std: normalization in 0..1 units; default ImageNet's; "store" uses the statistics
            gathered when the store was packed.
        output_dtype: "float32", "float16" or "uint8" (uint8 is not normalized).
        layout: "NCHW" or "NHWC".
        prefetch: batches prepared ahead.
        verify: check each record's checksum when read.
        rank, world_size: shard for distributed training; default from torch.distributed.
        hw_decoder_load: on the GPU, the share (0..1) of JPEG decoding given to the hardware
            JPEG decoder (A100/H100), the rest to nvJPEG's CUDA path; None: DALI's default.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str] | Store,
        *,
        batch_size: int = 64,
        augment: str | Sequence[Op] | None = "train",
        image_size: int = 224,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        sampler: str | None = None,
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
    ) -> None:
        if output_dtype not in OUTPUT_DTYPES:
            raise ValueError(f"output_dtype must be one of {sorted(OUTPUT_DTYPES)}, got {output_dtype!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if hw_decoder_load is not None and not 0.0 <= hw_decoder_load <= 1.0:
            raise ValueError(f"hw_decoder_load must lie in [0, 1], got {hw_decoder_load}")
        if sampler not in (None, "balanced"):
            raise ValueError(f"sampler must be None or 'balanced', got {sampler!r}")
        self.store = source if hasattr(source, "labels") and hasattr(source, "read") else open_store(source)
        if mean == "store":
            mean, std = _store_mean_std(self.store)
        self.ops = _resolve_ops(augment, image_size, mean, std)
        if sampler == "balanced" and weights is None:
            weights = balanced_weights(self.store.labels)
        self.rank, self.world_size = rank_and_world(rank, world_size)
        self.plan = EpochPlan(
            num_records=len(self.store), batch_size=batch_size, shuffle=shuffle, seed=seed,
            drop_last=drop_last, rank=self.rank, world_size=self.world_size,
            weights=None if weights is None else np.asarray(weights, dtype=np.float64),
            num_samples=num_samples,
        )
        self.device = _resolve_device(device)
        self.backend_name = _resolve_backend(backend, self.store)
        self.config = BackendConfig(
            batch_size=batch_size, device=self.device,
            device_id=local_device_index() if self.device == "cuda" else 0,
            num_threads=num_threads if num_threads is not None else default_workers(),
            seed=seed + 1_000_003 * self.rank, output_dtype=output_dtype, layout=layout,
            prefetch=prefetch, verify=verify, channels=self.store.channels,
            hw_decoder_load=hw_decoder_load,
        )
        self._backend: Backend | None = None
        self._epoch = 0
        self._next_batch = 0  # batches of the current epoch already handed out
        self._resuming = False  # load_state_dict was called: the next pass continues mid-epoch

    # --- DataLoader-like surface -----------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch on this rank (equal on every rank)."""
        return len(self.plan)

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def dataset(self) -> Store:
        return self.store

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next pass follows (as DistributedSampler.set_epoch).

        Without calls to set_epoch the loader advances one epoch after each complete pass.
        """
        if epoch != self._epoch:
            self._epoch, self._next_batch = int(epoch), 0

    def _get_backend(self) -> Backend:
        if self._backend is None:
            if self.backend_name == "dali":
                from .backends.dali_backend import DaliBackend

                self._backend = DaliBackend(self.store, self.ops, self.config)
            else:
                from .backends.torch_backend import TorchBackend

                self._backend = TorchBackend(self.store, self.ops, self.config)
        return self._backend

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # As with a DataLoader, a new pass starts the epoch from its first batch (a peek with
        # next(iter(loader)) loses nothing); only a pass right after load_state_dict resumes.
        if not self._resuming:
            self._next_batch = 0
        self._resuming = False
        epoch, start = self._epoch, self._next_batch
        batches = self.plan.batches(epoch, start)
        for images, labels in self._get_backend().iterate(batches, epoch):
            self._next_batch += 1
            yield images, labels
        if self._epoch == epoch and self._next_batch >= len(self.plan):
            self._epoch, self._next_batch = epoch + 1, 0

    # --- mid-epoch resume --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands: resuming from it yields exactly the remaining batches."""
        return {
            "version": _STATE_VERSION, "epoch": self._epoch, "batch": self._next_batch,
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
        self._epoch, self._next_batch = int(state["epoch"]), int(state["batch"])
        self._resuming = True

    def close(self) -> None:
        """Stop worker processes and pipelines."""
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
