"""The shard-aware shuffle: an epoch order that reads a window of shards at a time.

When the local cache cannot hold every shard of a remote store, a full permutation would
make every batch touch shards all over the dataset. Instead each epoch permutes the shards,
cuts that sequence into windows of ``window`` shards, and permutes the records within each
window (MosaicML Streaming's block shuffles do the same). The order is drawn from the epoch's
generator alone, so it is the same global order whatever the world size, and the ranks, which
stride through it together, all read inside the same window at a time.

Example (3 shards of 2 records, window 2): shards permuted to [2, 0, 1] -> windows {4 5 0 1},
{2 3} -> e.g. [1 4 0 5 | 3 2].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_WINDOW", "shard_window_order"]

DEFAULT_WINDOW = 2  # shards per window: the cache holds about two windows (this and the next)


def shard_window_order(rng: np.random.Generator, shard_sizes: Sequence[int], window: int) -> np.ndarray:
    """A permutation of all records (records numbered shard after shard): shards permuted,
    then records permuted within each window of ``window`` consecutive shards."""
    if window < 1:
        raise ValueError(f"the shuffle window must be at least one shard, got {window}")
    starts = np.concatenate([[0], np.cumsum(shard_sizes)]).astype(np.int64)
    shards = rng.permutation(len(shard_sizes))
    parts = []
    for first in range(0, len(shards), window):
        records = np.concatenate([np.arange(starts[s], starts[s + 1]) for s in shards[first:first + window]])
        parts.append(rng.permutation(records))
    return np.concatenate(parts)
