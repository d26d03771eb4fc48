"""Several shards read back as one dataset, records in shard order."""

from __future__ import annotations

import bisect
import dataclasses
import glob
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..codecs.base import Window
from ..errors import StoreFormatError
from .base import StoreReader
from .format import RecordTable, StoreHeader
from .metadata import MetadataColumn
from .registry import Match, StoreFormat
from .source import RecordSource

__all__ = ["ShardedStore", "merge_stats", "open_shards", "sharded_format"]


def merge_stats(headers: Sequence[StoreHeader]) -> dict[str, Any]:
    """Per-channel mean/std of several shards together (weighted by their pixel counts)."""
    parts = [h.stats for h in headers if h.stats and h.stats.get("mean")]
    if not parts:
        return {}
    if len(parts) == 1:
        return dict(parts[0])
    pixels = np.array([p.get("pixels", 1) for p in parts], dtype=np.float64)
    mean = np.array([p["mean"] for p in parts])
    sq = np.array([p["std"] for p in parts]) ** 2 + mean**2
    total_mean = (mean * pixels[:, None]).sum(0) / pixels.sum()
    total_sq = (sq * pixels[:, None]).sum(0) / pixels.sum()
    std = np.sqrt(np.maximum(total_sq - total_mean**2, 0))
    return {"mean": total_mean.round(6).tolist(), "std": std.round(6).tolist(), "pixels": float(pixels.sum())}


def _merged_header(shards: Sequence[StoreReader]) -> StoreHeader:
    """One header for the whole dataset: counts, encodings, dtypes and skipped inputs of every
    shard, statistics merged, channels the most any shard has."""
    headers = [s.header for s in shards]
    channels = {h.channels for h in headers}
    if len(channels - {1}) > 1:
        raise StoreFormatError(shards[0].path, f"its shards hold images of {sorted(channels)} channels; shards "
                               "of one dataset must agree (1-channel images are expanded, others cannot be)")
    kinds = {np.dtype(d).kind for h in headers for d in h.dtypes}
    if len(kinds) > 1:
        raise StoreFormatError(shards[0].path, "its shards mix integer and float pixels "
                               f"({sorted({d for h in headers for d in h.dtypes})}); pack them alike")
    return dataclasses.replace(
        headers[0], count=sum(h.count for h in headers),
        encodings=sorted({e for h in headers for e in h.encodings}),
        dtypes=sorted({d for h in headers for d in h.dtypes}), channels=max(channels),
        skipped=[item for h in headers for item in h.skipped], stats=merge_stats(headers),
        shard={"index": 0, "count": len(headers)})


def _schema(shard: StoreReader) -> list[tuple[str, str, str]]:
    return [(c.name, c.kind, c.dtype) for c in shard.metadata_columns]


class ShardedStore(RecordSource):
    """The concatenation of shards packed from one source (same classes, same payload kind)."""

    def __init__(self, shards: Sequence[StoreReader]) -> None:
        if not shards:
            raise ValueError("ShardedStore needs at least one shard")
        self._shards = list(shards)
        self._table: RecordTable | None = None
        self.path = self._shards[0].path
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
        self._header = _merged_header(self.shards)

    @property
    def shards(self) -> list[StoreReader]:
        return self._shards

    @property
    def table(self) -> RecordTable:
        """Every shard's record table, concatenated; encoding and dtype codes remapped onto the
        whole dataset's header (a shard's codes index its own lists)."""
        if self._table is None:
            arrays = {name: np.concatenate([getattr(s.table, name) for s in self.shards])
                      for name in RecordTable.empty().arrays()}
            for name in ("encodings", "dtypes"):
                merged = getattr(self._header, name)
                arrays[name] = np.concatenate([
                    np.searchsorted(merged, np.asarray(getattr(s.header, name))[getattr(s.table, name)])
                    for s in self.shards]).astype(np.uint8)
            paths = [p for s in self.shards for p in s.paths]
            self._table = RecordTable.from_arrays(arrays, paths, len(paths), self.path)
        return self._table

    @property
    def paths(self) -> list[str]:
        return [p for s in self.shards for p in s.paths]

    @property
    def header(self) -> StoreHeader:
        """The whole dataset's header: counts, encodings, dtypes, merged pixel statistics."""
        return self._header

    @property
    def classes(self) -> list[str]:
        return self.shards[0].classes

    @property
    def channels(self) -> int:
        return self._header.channels

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

    def read_into(self, index: int, out: memoryview, verify: bool = True) -> int:
        shard, local = self._locate(index)
        return shard.read_into(local, out, verify)

    def get(self, index: int) -> tuple[bytes | np.ndarray, int]:
        shard, local = self._locate(index)
        return shard.get(local)

    def decode(self, index: int, window: Window | None = None, *, into: np.ndarray | None = None,
               verify: bool = True) -> np.ndarray:
        shard, local = self._locate(index)
        return shard.decode(local, window, into=into, verify=verify)

    def close(self) -> None:
        for shard in self.shards:
            shard.close()

    def check_structure(self) -> tuple[list[str], dict[int, str]]:
        """Each shard's, its record indices made the dataset's."""
        problems: list[str] = []
        records: dict[int, str] = {}
        for start, shard in zip(self._starts, self.shards):
            found, bad = shard.check_structure()
            problems += [f"{shard.path}: {p}" for p in found]
            records.update({start + i: reason for i, reason in bad.items()})
        return problems, records

    def __getstate__(self) -> dict[str, Any]:
        return {"shards": self.shards}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["shards"])

    def __repr__(self) -> str:
        return f"ShardedStore({[s.path for s in self.shards]!r})"


OpenOne = Callable[[str, bool], RecordSource]


def open_shards(paths: Sequence[str], open_one: OpenOne, *, strict: bool = True) -> RecordSource:
    """The stores at ``paths`` (each opened and checked by ``open_one(path, strict)``) read as
    one dataset in the order given; the one store itself when there is one."""
    parts: list[Any] = []
    try:
        for path in paths:
            parts.append(open_one(path, strict))
        return parts[0] if len(parts) == 1 else ShardedStore(parts)
    except BaseException:
        for part in parts:  # release the handles: a file may be repacked or rewritten
            part.close()
        raise


def sharded_format(open_one: OpenOne) -> StoreFormat:
    """Shards named by a glob pattern (``train-*.lmdb``), sorted, each opened by ``open_one``."""

    def recognise(path: str) -> Match:
        return Match.CONTENT if glob.has_magic(path) else Match.NONE

    def open_pattern(path: str, *, strict: bool = True) -> RecordSource:
        found = sorted(glob.glob(path))
        if not found:
            raise FileNotFoundError(f"{path}: no store matches this pattern")
        return open_shards(found, open_one, strict=strict)

    return StoreFormat(name="sharded", extensions=(), recognise=recognise, open=open_pattern,
                       misnamed="a glob pattern that matches no store")
