"""The pure-PyTorch backend: DataLoader worker processes, OpenCV decode, NumPy operators.

It serves machines without DALI (Windows, macOS, CPU-only boxes) and is the reference the
tests compare the DALI backend against. Each worker builds a whole batch (decode, augment,
stack) so only one tensor per batch crosses the process boundary; pixels travel as uint8 (or
uint16) and are normalized on the output device, as timm's fast collate + prefetcher do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import WorkerDiedError
from ..ops import Normalize, Op
from ..ops.custom import run_numpy
from ..ops.normalize import max_value, resolve_mean_std
from .base import OUTPUT_DTYPES, BackendConfig

__all__ = ["TorchBackend", "split_normalize"]

BatchKey = tuple[int, tuple[int, ...]]  # (epoch, record indices)


def split_normalize(ops: Sequence[Op]) -> tuple[list[Op], Normalize | None]:
    """Split a trailing Normalize off, to run it on the batch on the output device."""
    ops = list(ops)
    if ops and isinstance(ops[-1], Normalize):
        return ops[:-1], ops[-1]
    return ops, None


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """One sample's random generator: the same (seed, epoch, record) always draws the same
    parameters, whatever the worker count, batch size or resume point."""
    return np.random.default_rng([seed, epoch, index])


class _BatchDataset(Dataset):
    """Maps a batch key to a stacked batch. Holds the store by path (it pickles as its path)."""

    def __init__(self, store: Any, ops: list[Op], config: BackendConfig) -> None:
        self.store = store
        self.ops = ops
        self.config = config

    def __len__(self) -> int:  # keys come from the sampler; the length is not used
        return 0

    def _decode(self, index: int) -> np.ndarray:
        image = self.store.decode(index)
        channels = self.config.channels
        if image.shape[2] != channels:
            if image.shape[2] == 1:
                image = np.repeat(image, channels, axis=2)
            else:
                raise ValueError(f"{self.store.path}: record {index} has {image.shape[2]} channels, "
                                 f"the loader expects {channels}")
        return image

    def __getitem__(self, key: BatchKey) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, indices = key
        rngs = [sample_rng(self.config.seed, epoch, i) for i in indices]
        images = [np.ascontiguousarray(im)
                  for im in run_numpy(self.ops, [self._decode(i) for i in indices], rngs)]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(f"augmented images differ in shape {sorted(shapes)}; end the augment "
                             "list with a fixed-size op (RandomResizedCrop, CenterCrop, Resize(size=...))")
        batch = np.stack(images)
        if batch.dtype == np.uint16:  # torch has limited uint16 support: carry as int32
            batch = batch.astype(np.int32)
        labels = torch.as_tensor(self.store.labels[np.asarray(indices)], dtype=torch.int64)
        return torch.from_numpy(batch), labels


class _EpochSampler(Sampler):
    """Yields the current epoch's batch keys; re-armed by the backend before each epoch."""

    def __init__(self) -> None:
        self.keys: list[BatchKey] = []

    def __iter__(self) -> Iterator[BatchKey]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class TorchBackend:
    """Batches from a store with torch.utils.data worker processes (``num_threads`` of them)."""

    def __init__(self, store: Any, ops: Sequence[Op], config: BackendConfig) -> None:
        self.config = config
        sample_ops, self.normalize = split_normalize(ops)
        if config.output_dtype == "uint8":
            self.normalize = None
        self.device = torch.device("cuda", config.device_id) if config.device == "cuda" else torch.device("cpu")
        self._sampler = _EpochSampler()
        self._scale = max_value(np.dtype(store.header.dtypes[0])) if store.header.dtypes else 255.0
        workers = max(0, config.num_threads)
        self._loader = DataLoader(
            _BatchDataset(store, sample_ops, config), batch_size=None, sampler=self._sampler,
            num_workers=workers, persistent_workers=workers > 0,
            prefetch_factor=config.prefetch if workers > 0 else None,
            pin_memory=self.device.type == "cuda",
        )
        self._mean_std: tuple[torch.Tensor, torch.Tensor] | None = None

    def _finish(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.normalize is not None:
            images = self._normalize(images)
        elif self.config.output_dtype != "uint8" or images.dtype != torch.uint8:
            images = images.to(OUTPUT_DTYPES[self.config.output_dtype])
        if self.config.layout == "NCHW" and images.ndim == 4:
            images = images.permute(0, 3, 1, 2)
        return images.contiguous(), labels

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype.is_floating_point:  # ops already produced floats: scale is 1
            scale = 1.0
        else:
            scale = self._scale if images.dtype != torch.uint8 else 255.0
        channels = images.shape[-1]
        mean, std = resolve_mean_std(self.normalize.mean, self.normalize.std, channels)
        m = torch.as_tensor(mean * scale, device=self.device)
        s = torch.as_tensor(std * scale, device=self.device)
        out = (images.float() - m) / s
        return out.to(OUTPUT_DTYPES[self.config.output_dtype])

    def iterate(self, batches: Sequence[np.ndarray], epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._sampler.keys = [(epoch, tuple(int(i) for i in batch)) for batch in batches]
        try:
            for images, labels in self._loader:
                yield self._finish(images, labels)
        except RuntimeError as exc:
            if "DataLoader worker" in str(exc) and ("killed" in str(exc) or "exited unexpectedly" in str(exc)):
                raise WorkerDiedError(f"a torch-backend worker process died: {exc}") from exc
            raise

    def close(self) -> None:
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._loader = None  # type: ignore[assignment]
