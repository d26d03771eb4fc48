"""What makes ``fastload.Loader`` a drop-in for ``torch.utils.data.DataLoader``.

* ``DataLoader`` keyword arguments: the ones fastload has a meaning for are mapped
  (``num_workers``, ``prefetch_factor``, ``generator``, ...), the others are accepted at their
  DataLoader defaults and otherwise refused with a TypeError that says what fastload does instead.
* ``loader.sampler`` / ``loader.batch_sampler``: views with ``set_epoch`` and ``len``, for code
  (Lightning, DDP scripts) that reshuffles through them.
* ``loader.dataset``: the data as a map-style Dataset whose items are what the loader yields per
  sample (the image after the loader's ops, and its label), for ``Subset`` and friends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from .ops import Op, run_numpy
from .ops.base import sample_rng
from .output import OutputSpec, finish_sample, split_normalize, to_channels
from .pixels import pixel_dtype

__all__ = ["DATALOADER_DEFAULTS", "check_dataloader_kwargs", "PlanSampler", "PlanBatchSampler",
           "PlannedLoader", "StoreDataset", "refuse_dataset"]

# DataLoader keywords fastload takes only at their DataLoader default, and why.
DATALOADER_DEFAULTS: dict[str, tuple[Any, str]] = {
    "batch_sampler": (None, "give batch_size= and sampler= (a Sampler or a sequence of indices) instead"),
    "collate_fn": (None, "batches come out collated, as (images, labels) tensors; transform whole "
                         "batches with batch_transforms= (functions f(images, labels, rng))"),
    "timeout": (0, "fastload raises at once, naming the worker, when one dies: there is no wait to bound"),
    "worker_init_fn": (None, "fastload's workers run no user code; seed augmentations with seed=, "
                             "and put per-sample code in augment= ops"),
    "multiprocessing_context": (None, "fastload starts its workers itself: the DALI backend's feed workers "
                                      "are fresh interpreters, the torch backend's use torch's default "
                                      "start method and never touch CUDA"),
    "pin_memory_device": ("", "outputs are made on the loader's device= (CUDA when available)"),
    "in_order": (True, "batches always come in the planned order"),
}


def check_dataloader_kwargs(kwargs: dict[str, Any]) -> None:
    """Accept DataLoader-only keywords at their defaults; refuse the rest with the reason."""
    for name, value in kwargs.items():
        if name not in DATALOADER_DEFAULTS:
            raise TypeError(f"Loader() got an unexpected keyword argument {name!r}")
        default, instead = DATALOADER_DEFAULTS[name]
        if name == "collate_fn" and value is torch.utils.data.default_collate:
            continue
        if not _is_default(value, default):
            raise TypeError(f"Loader() does not take {name}={value!r}: {instead}")


def _is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    try:  # an array or tensor compares element-wise: not the default, whatever it holds
        return bool(value == default)
    except (TypeError, ValueError, RuntimeError):
        return False


def refuse_dataset(source: Any) -> None:
    """A torch Dataset (an ImageFolder, say) is not a store: say how to pack it."""
    if isinstance(source, torch.utils.data.Subset) and isinstance(source.dataset, StoreDataset):
        raise TypeError(
            "fastload.Loader reads a store, not a Subset of loader.dataset: give the store and the "
            "records, fastload.Loader(subset.dataset.store, indices=subset.dataset.records[subset.indices], ...)")
    root = getattr(source, "root", None)
    if root:
        root = os.path.normpath(os.fspath(root))
        command = f"fastload pack {root}, which writes {root}.lmdb"
    else:
        command = "fastload pack IMAGE_FOLDER, which writes IMAGE_FOLDER.lmdb"
    raise TypeError(
        f"fastload.Loader reads packed stores, not a torch Dataset ({type(source).__name__}): pack the images "
        f"first ({command}), then pass the store path (or fastload.open_store(path)) to the Loader")


class PlannedLoader(Protocol):
    """What the sampler views read from the loader (``fastload.Loader`` is one). Named here as
    an interface so that this module, which the loader imports, never imports the loader."""

    @property
    def batch_size(self) -> int: ...

    drop_last: bool

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def _upcoming_batches(self) -> list[np.ndarray]: ...

    def _samples_per_epoch(self) -> int: ...


class PlanSampler:
    """``loader.sampler``: this rank's record order for the next pass, with ``set_epoch``."""

    def __init__(self, loader: PlannedLoader) -> None:
        self._loader = loader

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)

    def update(self, indices: Any, losses: Any) -> None:
        """Per-sample ``losses`` of the records ``indices`` (as ``return_index=True`` yields them):
        with ``loss_sampling=``, they reweight the draws from the next epoch on (fastload.loss_sampling)."""
        self._loader._tracker("loader.sampler.update()").update(indices, losses)

    def __iter__(self) -> Iterator[int]:
        for batch in self._loader._upcoming_batches():
            yield from (int(i) for i in batch)

    def __len__(self) -> int:
        return self._loader._samples_per_epoch()


class PlanBatchSampler(PlanSampler):
    """``loader.batch_sampler``: the next pass's batches of record indices, with ``set_epoch``."""

    @property
    def batch_size(self) -> int:
        return self._loader.batch_size

    @property
    def drop_last(self) -> bool:
        return self._loader.drop_last

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        for batch in self._loader._upcoming_batches():
            yield [int(i) for i in batch]

    def __len__(self) -> int:
        return len(self._loader)


class StoreDataset(Dataset):
    """The loader's data as a map-style Dataset: item ``i`` is ``(image, label)``, the image after
    the loader's ops (drawn from ``[seed, 0, record]``), as a tensor in the loader's layout and
    dtype, on the CPU. Pickles as the store's path (safe in DataLoader workers).

    Attributes:
        store: the underlying store (``store.get``/``store.decode`` for raw records).
        records: the record index of each item (a subset when the loader has ``indices=``).
    """

    def __init__(self, store: Any, ops: Sequence[Op], *, records: np.ndarray | None, seed: int,
                 layout: str, output_dtype: str, channels: int) -> None:
        self.store, self.ops = store, list(ops)
        self.records = np.arange(len(store)) if records is None else np.asarray(records, np.int64)
        self.seed, self.layout, self.output_dtype, self.channels = seed, layout, output_dtype, channels
        self._ops, normalize = split_normalize(self.ops)
        self.output = OutputSpec(dtype=output_dtype, layout=layout, channels=channels,
                                 pixel_dtype=pixel_dtype(store), normalize=normalize)

    @property
    def classes(self) -> list[str]:
        return self.store.classes

    @property
    def targets(self) -> list[int]:
        """Labels of the items (as ImageFolder's ``targets``)."""
        return np.asarray(self.store.labels)[self.records].tolist()

    def __len__(self) -> int:
        return len(self.records)

    def describe(self, indices: Any) -> list[dict[str, Any]]:
        """Path, label, class and metadata of store records, as ``return_index=True`` yields them
        (store record indices, not item positions of this dataset)."""
        from .audit import describe_records

        values = indices.detach().cpu().numpy() if hasattr(indices, "detach") else indices
        return describe_records(self.store, values)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = int(self.records[index])
        image = np.asarray(self.store.decode(record))
        image = to_channels(image, self.channels, f"{self.store.path}: record {record}")
        image = run_numpy(self._ops, [image], [sample_rng(self.seed, 0, record)])[0]
        return finish_sample(image, self.output), int(self.store.labels[record])
