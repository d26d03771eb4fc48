"""Several shards read back as one dataset, records in shard order."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from ..errors import StoreFormatError
from .base import StoreReader
from .format import StoreHeader

__all__ = ["ShardedStore"]


class ShardedStore:
    """The concatenation of shards packed from one source (same classes, same payload kind)."""

    def __init__(self, shards: Sequence[StoreReader]) -> None:
        if not shards:
            raise ValueError("ShardedStore needs at least one shard")
        self.shards = list(shards)
        self.path = self.shards[0].path
        first = self.shards[0].header
        for shard in self.shards[1:]:
            if shard.header.classes != first.classes:
                raise StoreFormatError(shard.path, f"its classes differ from those of {self.path}; "
                                       "shards must be packed from the same source")
            if shard.header.payload != first.payload:
                raise StoreFormatError(shard.path, "mixes raw and encoded payloads with other shards")
        self._starts = np.cumsum([0] + [len(s) for s in self.shards]).tolist()

    @property
    def paths(self) -> list[str]:
        return [p for s in self.shards for p in s.paths]

    @property
    def header(self) -> StoreHeader:
        return self.shards[0].header

    @property
    def classes(self) -> list[str]:
        return self.shards[0].classes

    @property
    def channels(self) -> int:
        return max(s.channels for s in self.shards)

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([s.labels for s in self.shards])

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, index: int) -> tuple[StoreReader, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"record {index} out of range (dataset has {n})")
        index %= n
        shard = bisect.bisect_right(self._starts, index) - 1
        return self.shards[shard], index - self._starts[shard]

    def read(self, index: int, verify: bool = True) -> bytes:
        shard, local = self._locate(index)
        return shard.read(local, verify)

    def get(self, index: int) -> tuple[bytes | np.ndarray, int]:
        shard, local = self._locate(index)
        return shard.get(local)

    def decode(self, index: int) -> np.ndarray:
        shard, local = self._locate(index)
        return shard.decode(local)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedStore({[s.path for s in self.shards]!r})"
