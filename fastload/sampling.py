"""Which records each batch of an epoch holds, on each rank: the one source of sample order.

Both backends take their batches from an EpochPlan, so order, coverage, sharding and resume
are decided here once, deterministically from (seed, epoch), whatever the worker count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EpochPlan", "SamplerPlan", "balanced_weights", "make_plan", "shard_window_order"]


def shard_window_order(rng: np.random.Generator, shard_sizes: Sequence[int], window: int) -> np.ndarray:
    """The shard-aware shuffle: a permutation of all records (numbered shard after shard) that
    reads a window of shards at a time.

    When the local cache cannot hold every shard of a remote store, a full permutation would make
    every batch touch shards all over the dataset. Instead the shards are permuted, that sequence
    is cut into windows of ``window`` shards, and the records are permuted within each window (as
    MosaicML Streaming's block shuffles do). It is drawn from the epoch's generator alone: the same
    global order at any world size, and the ranks, striding through it together, read inside the
    same window at a time.

    Example (3 shards of 2 records, window 2): shards permuted to [2, 0, 1] -> windows {4 5 0 1},
    {2 3} -> e.g. [1 4 0 5 | 3 2].
    """
    if window < 1:
        raise ValueError(f"the shuffle window must be at least one shard, got {window}")
    starts = np.concatenate([[0], np.cumsum(shard_sizes)]).astype(np.int64)
    shards = rng.permutation(len(shard_sizes))
    parts = []
    for first in range(0, len(shards), window):
        records = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shards[first:first + window]])
        parts.append(rng.permutation(records))
    return np.concatenate(parts)


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-record weights that make every class equally likely (1 / its class count)."""
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (1.0 / counts)[inverse]


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """The sample order of one rank, for any epoch.

    Without weights, every epoch is a permutation of all records (``shuffle``) or their order,
    split across ranks by striding (rank r takes positions r, r + world_size, ...). With
    ``drop_last=False`` the global order is padded by wrapping around so every rank gets the same
    number of samples (as ``torch.utils.data.DistributedSampler`` does); with ``drop_last=True``
    the tail that would make ranks or batches unequal is dropped. With ``weights``, each epoch
    draws ``num_samples`` records with replacement in proportion to the weights.

    Example (10 records, batch 4, 2 ranks, no shuffle):
        rank 0 gets records 0 2 4 6 8 -> batches [0 2 4 6] [8]; rank 1 gets [1 3 5 7] [9].
    """

    num_records: int
    batch_size: int
    shuffle: bool = True
    seed: int = 0
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1
    weights: np.ndarray | None = None
    num_samples: int | None = None
    # The shard-aware shuffle (``shard_window_order``), for a cache smaller than the data: the
    # records per shard, in order, and the shards per window. None: a full permutation.
    shard_sizes: tuple[int, ...] | None = None
    shard_window: int = 2

    def __post_init__(self) -> None:
        if self.num_records < 1:
            raise ValueError("EpochPlan needs at least one record")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside 0..{self.world_size - 1}")
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (self.num_records,) or (w < 0).any() or not w.sum() > 0:
                raise ValueError(f"weights must be {self.num_records} non-negative numbers, not all zero")
        if self.samples_per_rank < (self.batch_size if self.drop_last else 1):
            raise ValueError(
                f"{self.total_samples} samples over {self.world_size} ranks leave fewer than one "
                f"{'full ' if self.drop_last else ''}batch of {self.batch_size} per rank"
            )

    @property
    def total_samples(self) -> int:
        return self.num_samples if self.num_samples is not None else self.num_records

    @property
    def samples_per_rank(self) -> int:
        n, w = self.total_samples, self.world_size
        return n // w if self.drop_last else -(-n // w)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        per_rank, bs = self.samples_per_rank, self.batch_size
        return per_rank // bs if self.drop_last else -(-per_rank // bs)

    def global_order(self, epoch: int) -> np.ndarray:
        """Every rank's samples for ``epoch``, interleaved, before padding."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.weights is not None:
            p = np.asarray(self.weights, dtype=np.float64)
            return rng.choice(self.num_records, size=self.total_samples, replace=True, p=p / p.sum())
        if self.shuffle and self.shard_sizes is not None:
            return shard_window_order(rng, self.shard_sizes, self.shard_window)
        if self.shuffle:
            return rng.permutation(self.num_records)
        return np.arange(self.num_records)

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's record indices for ``epoch``, in order."""
        order = self.global_order(epoch)
        needed = self.samples_per_rank * self.world_size
        if needed > len(order):
            order = np.resize(order, needed)  # wrap around: repeats the first records
        return order[:needed][self.rank :: self.world_size]

    def batches(self, epoch: int, start: int = 0) -> list[np.ndarray]:
        """This rank's batches for ``epoch``, from batch ``start`` on (for mid-epoch resume)."""
        idx = self.indices(epoch)
        count = len(self)
        return [idx[b * self.batch_size : (b + 1) * self.batch_size] for b in range(start, count)]

    # --- elastic resume: the global order does not depend on the world size ----------------
    def seen_after(self, batches: int) -> int:
        """Global samples of an epoch consumed once every rank has taken ``batches`` batches:
        ranks stride through the global order, so these are exactly its first positions."""
        return min(batches * self.batch_size * self.world_size, self.total_samples)

    def batches_after(self, epoch: int, seen: int) -> list[np.ndarray]:
        """This rank's batches of the rest of ``epoch`` once its first ``seen`` samples (in the
        global order) were consumed, by any number of ranks: the unseen samples split over this
        plan's ranks, padded or dropped as ``drop_last`` says, equal batches on every rank."""
        rest = self.global_order(epoch)[seen:self.total_samples]
        if len(rest) == 0:
            return []
        w, bs = self.world_size, self.batch_size
        per_rank = len(rest) // w if self.drop_last else -(-len(rest) // w)
        if self.drop_last:
            per_rank -= per_rank % bs
        if per_rank <= 0:
            return []
        mine = np.resize(rest, per_rank * w)[self.rank :: w]
        return [mine[b : b + bs] for b in range(0, per_rank, bs)]


class SamplerPlan:
    """The order of a user's sampler (a torch ``Sampler``, such as ``DistributedSampler``, or a
    sequence of record indices), batched like an EpochPlan.

    The sampler decides this rank's order and sharding itself (DistributedSampler does), so the
    plan takes it as it comes: each pass iterates it once; its epoch is the caller's to set
    (``sampler.set_epoch``, or ``Loader.set_epoch``, which forwards it). Resuming mid-epoch
    skips the batches already seen, which replays exactly when the sampler's order is a
    function of its epoch (as DistributedSampler's is).
    """

    def __init__(self, sampler: Iterable[int], num_records: int, batch_size: int, drop_last: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.sampler, self.num_records = sampler, num_records
        self.batch_size, self.drop_last = batch_size, drop_last
        self.seed, self.world_size, self.rank = 0, 1, 0
        if len(self) < 1:
            raise ValueError(f"the sampler gives {self.samples} samples: fewer than one "
                             f"{'full ' if drop_last else ''}batch of {batch_size}")

    @property
    def samples(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __len__(self) -> int:
        n, bs = self.samples, self.batch_size
        return n // bs if self.drop_last else -(-n // bs)

    def indices(self, epoch: int) -> np.ndarray:
        order = np.fromiter((int(i) for i in self.sampler), dtype=np.int64)
        bad = order[(order < 0) | (order >= self.num_records)]
        if bad.size:
            raise IndexError(f"the sampler gave record {int(bad[0])}, outside 0..{self.num_records - 1}")
        return order

    def batches(self, epoch: int, start: int = 0) -> list[np.ndarray]:
        idx = self.indices(epoch)
        count = len(self)
        return [idx[b * self.batch_size : (b + 1) * self.batch_size] for b in range(start, count)]


def make_plan(labels: np.ndarray, *, store_size: int, batch_size: int, shuffle: bool, seed: int,
              drop_last: bool, rank: int, world_size: int, sampler: Any = None,
              weights: Any = None, num_samples: int | None = None,
              shard_sizes: tuple[int, ...] | None = None) -> EpochPlan | SamplerPlan:
    """The plan a Loader's sampling arguments ask for.

    A user's sampler (a Sampler or a sequence of record indices) decides the order unless
    ``weights`` are given; otherwise an EpochPlan over ``labels``' records draws it, by weights
    when there are some (``sampler="balanced"``: every class equally often). ``shard_sizes``
    (records per shard of a remote store whose cache cannot hold it all) makes a shuffle read a
    window of shards at a time (``shard_window_order``); it applies to a plain shuffle of every
    record only.
    """
    user_sampler = sampler if sampler is not None and not isinstance(sampler, str) else None
    if isinstance(sampler, str) and sampler == "balanced" and weights is None:
        weights = balanced_weights(labels)
    if user_sampler is not None and weights is None:
        return SamplerPlan(user_sampler, store_size, batch_size, drop_last)
    return EpochPlan(
        num_records=len(labels), batch_size=batch_size, shuffle=bool(shuffle), seed=seed,
        drop_last=drop_last, rank=rank, world_size=world_size,
        weights=None if weights is None else np.asarray(weights, dtype=np.float64),
        num_samples=num_samples,
        shard_sizes=tuple(shard_sizes) if shard_sizes and shuffle and weights is None and len(labels) == store_size
        else None,
    )
