"""Several shards read back as one dataset, records in shard order."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from ..errors import StoreFormatError
from .base import StoreReader
from .format import StoreHeader
from .metadata import MetadataColumn

__all__ = ["ShardedStore"]


def _schema(shard: StoreReader) -> list[tuple[str, str, str]]:
    return [(c.name, c.kind, c.dtype) for c in shard.metadata_columns]


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
            if _schema(shard) != _schema(self.shards[0]):
                raise StoreFormatError(shard.path, f"its metadata columns {_schema(shard)} differ "
                                       f"from those of {self.path} {_schema(self.shards[0])}; "
                                       "shards must be packed from the same source")
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

    @property
    def metadata_columns(self) -> tuple[MetadataColumn, ...]:
        return self.shards[0].metadata_columns

    @property
    def metadata(self) -> dict[str, np.ndarray]:
        """Every shard's metadata columns, concatenated in shard order (as ``labels``)."""
        parts = [s.metadata for s in self.shards]
        return {c.name: np.concatenate([p[c.name] for p in parts]) for c in self.metadata_columns}

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
