"""LMDB stores: one ``subdir=False`` environment file, records keyed by big-endian index.

Keys: record ``i`` is ``i.to_bytes(8, "big")``, so key order is record order and sequential
reads are sequential on disk. Metadata keys start with ``~`` and sort after every record:
``~header`` (JSON), ``~paths`` (JSON list), one key per array in ARRAY_DTYPES, and per
metadata column ``~metadata/N`` (its array) and, for strings, ``~metadata/N/values`` (JSON).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import MissingExtraError, StoreFormatError
from .base import StoreReader, StoreWriter
from .format import ARRAY_DTYPES, RecordTable, StoreHeader
from .metadata import MetadataColumn, encode_metadata

__all__ = ["LmdbReader", "LmdbWriter"]

HEADER_KEY = b"~header"
PATHS_KEY = b"~paths"
_COMMIT_BYTES = 64 << 20


def _lmdb():
    try:
        import lmdb
    except ImportError:
        raise MissingExtraError("lmdb", "lmdb", "LMDB stores") from None
    return lmdb


def record_key(index: int) -> bytes:
    return index.to_bytes(8, "big")


def _array_key(name: str) -> bytes:
    return f"~{name}".encode()


def _column_keys(number: int) -> tuple[bytes, bytes]:
    """Keys of metadata column ``number``: its array, and a string column's values (JSON)."""
    return f"~metadata/{number}".encode(), f"~metadata/{number}/values".encode()


class _SharedEnvironments:
    """LMDB forbids opening one environment twice in a process, yet two readers (a train and a
    val loader, say) may name the same file: they share one read-only environment, counted."""

    def __init__(self) -> None:
        self._open: dict[tuple[int, str], list[Any]] = {}
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget_inherited)

    def _forget_inherited(self) -> None:
        # py-lmdb refuses to open a file the parent had open, and LMDB forbids using an
        # environment across fork. A read-only, lock-free environment holds no locks: closing
        # the child's copy only unmaps it there; the child then opens its own.
        for env, _ in self._open.values():
            try:
                env.close()
            except Exception:  # already unusable in the child: nothing to release
                pass
        self._open.clear()

    def acquire(self, path: str) -> Any:
        key = (os.getpid(), os.path.realpath(path))
        if key not in self._open:
            lmdb = _lmdb()
            try:
                # We write single files; an environment directory (data.mdb) is read as well.
                env = lmdb.open(path, subdir=os.path.isdir(path), readonly=True, lock=False,
                                readahead=False, meminit=False, max_readers=2048)
            except lmdb.Error as exc:
                raise StoreFormatError(path, f"not a readable LMDB file ({exc})") from None
            self._open[key] = [env, 0]
        entry = self._open[key]
        entry[1] += 1
        return entry[0]

    def release(self, path: str) -> None:
        key = (os.getpid(), os.path.realpath(path))
        entry = self._open.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del self._open[key]
                entry[0].close()


_ENVIRONMENTS = _SharedEnvironments()


class LmdbReader(StoreReader):
    extension = ".lmdb"

    def _open(self) -> Any:
        env = _ENVIRONMENTS.acquire(self.path)
        return env, env.begin(buffers=False)

    def _close(self, handle: Any) -> None:
        handle[1].abort()
        _ENVIRONMENTS.release(self.path)

    def _read_header(self, handle: Any) -> StoreHeader:
        raw = handle[1].get(HEADER_KEY)
        if raw is None:
            raise StoreFormatError(self.path, "an LMDB file, but not a fastload store (no fastload header)")
        return StoreHeader.from_json(raw, self.path)

    def _read_table(self, handle: Any, header: StoreHeader) -> RecordTable:
        txn = handle[1]
        arrays = {}
        for name, (dtype, tail) in ARRAY_DTYPES.items():
            raw = txn.get(_array_key(name))
            if raw is None:
                raise StoreFormatError(self.path, f"the per-record array {name!r} is missing")
            arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(-1, *tail)
        paths = json.loads(txn.get(PATHS_KEY) or b"[]")
        return RecordTable.from_arrays(arrays, paths, header.count, self.path)

    def _read_column(self, handle: Any, number: int, column: MetadataColumn) -> tuple[Any, list[str] | None]:
        array_key, values_key = _column_keys(number)
        raw = handle[1].get(array_key)
        if raw is None or len(raw) % np.dtype(column.dtype).itemsize:
            raise StoreFormatError(self.path, f"metadata column {column.name!r} is missing or torn")
        values = handle[1].get(values_key)
        if values is not None:
            try:
                values = json.loads(values)
            except ValueError:
                raise StoreFormatError(self.path, f"metadata column {column.name!r}: its values "
                                       "are not valid JSON (corrupt store)") from None
        return np.frombuffer(raw, dtype=column.dtype), values

    def _read_payload(self, handle: Any, index: int) -> bytes:
        data = handle[1].get(record_key(index))
        if data is None:
            raise KeyError(index)
        return data


def _json_bytes(strings: list[str]) -> bytes:
    # backslashreplace: a lone surrogate (from a non-UTF-8 name) is written as its JSON escape.
    return json.dumps(strings, ensure_ascii=False).encode("utf-8", "backslashreplace")


class LmdbWriter(StoreWriter):
    def __init__(self, path: str, size_hint: int) -> None:
        super().__init__(path, size_hint)
        self._lmdb = _lmdb()
        self._map_size = max(64 << 20, int(size_hint * 1.25) + (16 << 20))
        self._env = self._lmdb.open(path, subdir=False, map_size=self._map_size, lock=True,
                                    sync=False, metasync=False, meminit=False, map_async=False)
        self._pending: list[tuple[bytes, bytes]] = []
        self._pending_bytes = 0

    def append(self, payload: bytes) -> None:
        self._pending.append((record_key(self.count), payload))
        self._pending_bytes += len(payload)
        self.count += 1
        if self._pending_bytes >= _COMMIT_BYTES:
            self._flush()

    def _put_all(self, items: list[tuple[bytes, bytes]], append: bool) -> None:
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    cursor = txn.cursor()
                    cursor.putmulti(items, append=append)
                return
            except self._lmdb.MapFullError:
                # Grow the map and redo the whole (aborted) transaction.
                self._map_size *= 2
                self._env.set_mapsize(self._map_size)

    def _flush(self) -> None:
        if self._pending:
            self._put_all(self._pending, append=True)
            self._pending, self._pending_bytes = [], 0

    def finish(self, header: StoreHeader, table: RecordTable,
               metadata: Mapping[str, Any] | None = None) -> None:
        self._flush()
        meta = [(_array_key(name), np.ascontiguousarray(array, dtype=ARRAY_DTYPES[name][0]).tobytes())
                for name, array in table.arrays().items()]
        columns = encode_metadata(metadata, len(table.paths))
        header = dataclasses.replace(header, metadata_columns=[c.column.to_json() for c in columns])
        for number, encoded in enumerate(columns):
            array_key, values_key = _column_keys(number)
            meta.append((array_key, encoded.stored.tobytes()))
            if encoded.values is not None:
                meta.append((values_key, _json_bytes(encoded.values)))
        meta.append((HEADER_KEY, header.to_json()))
        meta.append((PATHS_KEY, json.dumps(table.paths, ensure_ascii=False).encode("utf-8")))
        self._put_all(sorted(meta), append=False)
        self._env.sync(True)
        self._env.close()
        lock = self.path + "-lock"
        if os.path.exists(lock):
            os.remove(lock)

    def abort(self) -> None:
        self._env.close()
        lock = self.path + "-lock"
        if os.path.exists(lock):
            os.remove(lock)
