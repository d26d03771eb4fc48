"""LMDB stores: one ``subdir=False`` environment file, records keyed by big-endian index.

Written with py-lmdb; read without it (``lmdb_pages``), every page checked before it is used.

Keys: record ``i`` is ``i.to_bytes(8, "big")``, so key order is record order and sequential
reads are sequential on disk. Metadata keys start with ``~`` and sort after every record:
``~header`` (JSON), ``~paths`` (JSON list), one key per array in ARRAY_DTYPES, and per
metadata column ``~metadata/N`` (its array) and, for strings, ``~metadata/N/values`` (JSON).
"""

from __future__ import annotations

import dataclasses
import json
import os
from array import array
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._optional import require
from ..errors import StoreFormatError
from .base import StoreReader, StoreWriter
from .format import ARRAY_DTYPES, RecordTable, StoreHeader
from .lmdb_pages import MAGIC, LmdbFile
from .metadata import MetadataColumn, encode_metadata
from .registry import Match, StoreFormat, read_head

__all__ = ["FORMAT", "LmdbReader", "LmdbWriter"]

HEADER_KEY = b"~header"
PATHS_KEY = b"~paths"
_COMMIT_BYTES = 64 << 20


def _lmdb():
    return require("lmdb", None, "LMDB stores")


def record_key(index: int) -> bytes:
    return index.to_bytes(8, "big")


def _array_key(name: str) -> bytes:
    return f"~{name}".encode()


def _column_keys(number: int) -> tuple[bytes, bytes]:
    """Keys of metadata column ``number``: its array, and a string column's values (JSON)."""
    return f"~metadata/{number}".encode(), f"~metadata/{number}/values".encode()


class _Handle:
    """One process's view of an LMDB store: the checked file, and where each record found so
    far lies (filled a leaf page at a time, as records on it are first read)."""

    def __init__(self, file: LmdbFile) -> None:
        self.file = file
        self.offsets = array("q")  # per record: file offset, -1 until its leaf page is checked
        self.sizes = array("q")  # the record table's nbytes
        self.wrong_size: dict[int, int] = {}  # record -> its size in the database, when not nbytes


class LmdbReader(StoreReader):
    """Reads an LMDB store with checked ``pread``s, not LMDB (see lmdb_pages: LMDB itself can
    crash on a damaged file). Two readers of one file, forks and spawns need no coordination."""

    extension = ".lmdb"

    def _open(self) -> _Handle:
        data = os.path.join(self.path, "data.mdb") if os.path.isdir(self.path) else self.path
        file = LmdbFile(self.path, data, strict=self.strict)
        self.problems += [p for p in file.problems if p not in self.problems]
        return _Handle(file)

    def _close(self, handle: _Handle) -> None:
        handle.file.close()

    def _read_header(self, handle: _Handle) -> StoreHeader:
        raw = handle.file.get(HEADER_KEY)
        if raw is None:
            raise StoreFormatError(self.path, "an LMDB file, but not a fastload store (no fastload header)")
        return StoreHeader.from_json(raw, self.path)

    def _check_header(self, handle: _Handle, header: StoreHeader) -> list[str]:
        """The database must hold the header's records and nothing else besides metadata: its
        entry count, and the last record's key directly before the metadata keys."""
        file = handle.file
        meta_keys = file.keys_from(b"~")
        entries = file.meta.main.entries
        if entries != header.count + len(meta_keys):
            return [f"the database holds {entries:,} entries, the header describes {header.count:,} "
                    f"records and {len(meta_keys)} metadata entries"]
        if header.count and file.locate(record_key(header.count - 1)) is None:
            return [f"the last record ({header.count - 1}) is missing from the database"]
        return []

    def _read_table(self, handle: _Handle, header: StoreHeader) -> RecordTable:
        arrays = {}
        for name, (dtype, tail) in ARRAY_DTYPES.items():
            raw = handle.file.get(_array_key(name))
            if raw is None:
                raise StoreFormatError(self.path, f"the per-record array {name!r} is missing")
            expected = header.count * np.dtype(dtype).itemsize * int(np.prod(tail, dtype=np.int64))
            if len(raw) != expected:
                raise self._damage(f"the per-record array {name!r} has {len(raw):,} bytes, "
                                   f"{header.count:,} records need {expected:,}")
            arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(-1, *tail)
        try:
            paths = json.loads(handle.file.get(PATHS_KEY) or b"[]")
        except (ValueError, UnicodeDecodeError):
            raise self._damage("the source paths are not valid JSON") from None
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise self._damage("the source paths are not a list of strings")
        return RecordTable.from_arrays(arrays, paths, header.count, self.path)

    def _read_column(self, handle: _Handle, number: int, column: MetadataColumn) -> tuple[Any, list[str] | None]:
        array_key, values_key = _column_keys(number)
        raw = handle.file.get(array_key)
        if raw is None:
            raise StoreFormatError(self.path, f"metadata column {column.name!r} is missing")
        if len(raw) % np.dtype(column.dtype).itemsize:
            raise self._damage(f"metadata column {column.name!r} is torn ({len(raw):,} bytes)")
        values = handle.file.get(values_key)
        if values is not None:
            try:
                values = json.loads(values)
            except (ValueError, UnicodeDecodeError):
                raise self._damage(f"metadata column {column.name!r}: its values are not valid JSON") from None
        return np.frombuffer(raw, dtype=column.dtype), values

    def _payload_spans(self, handle: _Handle, index: int) -> list[tuple[Any, int, int]]:
        if not handle.sizes:
            handle.sizes.frombytes(self.table.nbytes.astype("=i8").tobytes())
            handle.offsets = array("q", [-1]) * len(handle.sizes)
        offset = handle.offsets[index]
        if offset < 0:
            offset = self._locate(handle, index)
        return [(handle.file.file, offset, handle.sizes[index])]

    def _read_payload(self, handle: _Handle, index: int) -> bytes:
        (file, offset, size), = self._payload_spans(handle, index)
        return file.read(offset, size)

    def _locate(self, handle: _Handle, index: int) -> int:
        """Check the leaf page holding record ``index`` and note where its records lie."""
        file, count = handle.file, len(handle.sizes)
        leaf = file.leaf(file.leaf_pgnos[file.leaf_index(record_key(index))])
        mine = leaf.keys < count
        for record, offset, size in zip(leaf.keys[mine].tolist(), leaf.offsets[mine].tolist(),
                                        leaf.sizes[mine].tolist()):
            if size == handle.sizes[record]:
                handle.offsets[record] = offset
            else:
                handle.wrong_size[record] = size
        if index in handle.wrong_size:
            raise self._corrupt(index, f"its stored size ({handle.wrong_size[index]:,} bytes) differs "
                                f"from the record table's ({handle.sizes[index]:,} bytes)")
        if handle.offsets[index] < 0:
            raise KeyError(index)
        return handle.offsets[index]

    def check_structure(self) -> tuple[list[str], dict[int, str]]:
        handle = self._live_handle()
        problems, records = handle.file.walk(len(self))
        return list(self.problems) + problems, records


def _json_bytes(strings: list[str]) -> bytes:
    # backslashreplace: a lone surrogate (from a non-UTF-8 name) is written as its JSON escape.
    return json.dumps(strings, ensure_ascii=False).encode("utf-8", "backslashreplace")


class LmdbWriter(StoreWriter):
    version = 1  # the LMDB layout has not changed since version 1: older readers still read it
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
        header = dataclasses.replace(header, metadata_columns=[c.column.to_json() for c in columns],
                                     format_version=self.version)
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


_MAGIC_BYTES = MAGIC.to_bytes(4, "little")
# Also LMDB variants fastload refuses (a 32-bit build's 12-byte page header, a big-endian
# machine's byte order): recognised as LMDB, so that the reader says which variant it is.
_VARIANT_MAGICS = (_MAGIC_BYTES, MAGIC.to_bytes(4, "big"))


def recognise(path: str) -> Match:
    """An LMDB environment: a folder holding ``data.mdb``, or a file with LMDB's magic in its
    first meta page, or, named ``.lmdb``, in its second (its first page destroyed)."""
    if os.path.isdir(path):
        return Match.CONTENT if os.path.isfile(os.path.join(path, "data.mdb")) else Match.NONE
    head = read_head(path, 20)
    if head[16:20] in _VARIANT_MAGICS or head[12:16] in _VARIANT_MAGICS:
        return Match.CONTENT
    if not FORMAT.named_like(path):
        return Match.NONE
    # LMDB's second meta page lies one page size (4 to 64 KiB) into the file.
    pages = (4096, 8192, 16384, 32768, 65536)
    return Match.CONTENT if any(read_head(path, 4, p + 16) == _MAGIC_BYTES for p in pages) else Match.NAME


FORMAT = StoreFormat(name="lmdb", extensions=(".lmdb",), recognise=recognise, open=LmdbReader.opened,
                     writer=LmdbWriter, misnamed="named like LMDB but is not an LMDB file")
