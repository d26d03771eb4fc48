"""The reader and writer interface every store format implements.

A reader holds a path, not a handle: it opens its handle lazily, once per process (it notices
a fork by the process id), and pickles as its path, so it crosses fork and spawn boundaries.

No damaged file may crash a reader or surface a library's own exception: opening checks the
file's structure (each format's ``_open``), every read checks where a record lies and its size
before copying it, and every failure is a ``CorruptStoreError`` (``CorruptRecordError`` when one
record is at fault) naming the store. See docs/FORMAT.md, "Damaged stores".
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..codecs import images
from ..codecs.base import Window, cut_window
from ..errors import CorruptRecordError, CorruptStoreError
from .format import RecordTable, StoreHeader, checksum
from .metadata import MetadataColumn, decode_column
from .source import RecordSource

__all__ = ["StoreReader", "StoreWriter"]


class StoreReader(RecordSource):
    """Read-only access to one packed store: ``len``, labels, classes, ``get``, ``decode``."""

    extension: str = ""

    def __init__(self, path: str | os.PathLike[str], *, strict: bool = True) -> None:
        self.path = os.fspath(path)
        self.strict = strict
        # What the checks at open found; only ever non-empty when not strict (they raise).
        self.problems: list[str] = []
        self._handle: Any = None
        self._pid: int | None = None
        self._header: StoreHeader | None = None
        self._table: RecordTable | None = None
        self._metadata: dict[str, np.ndarray] | None = None

    @classmethod
    def opened(cls, path: str | os.PathLike[str], *, strict: bool = True) -> StoreReader:
        """A reader of ``path`` whose header has been read and checked (a file that is not
        such a store fails here, its handle released: the file may be repacked or rewritten)."""
        reader = cls(path, strict=strict)
        try:
            reader.header  # noqa: B018 - validate now
        except BaseException:
            reader.close()
            raise
        return reader

    # --- process-local handle -------------------------------------------------------------
    @abstractmethod
    def _open(self) -> Any:
        """Open and return a read-only handle (called once per process), checking the file's
        structure: raise ``CorruptStoreError`` for damage, or, when not ``self.strict``, note it
        in ``self.problems`` where reading can go on."""

    @abstractmethod
    def _close(self, handle: Any) -> None: ...

    @abstractmethod
    def _read_header(self, handle: Any) -> StoreHeader: ...

    @abstractmethod
    def _read_table(self, handle: Any, header: StoreHeader) -> RecordTable: ...

    @abstractmethod
    def _read_payload(self, handle: Any, index: int) -> bytes:
        """The stored bytes of record ``index`` (0 <= index < len); KeyError if it is missing,
        ``CorruptStoreError`` or ``OSError`` if it cannot be read."""

    def _check_header(self, handle: Any, header: StoreHeader) -> list[str]:
        """Disagreements between the header and the file's structure (checked at open)."""
        return []

    def check_structure(self) -> tuple[list[str], dict[int, str]]:
        """The whole-file check of ``fastload verify``, beyond each record's checksum: problems
        of the store, and problems of single records by index. Reads every index page."""
        return list(self.problems), {}

    def _read_column(self, handle: Any, number: int, column: MetadataColumn) -> tuple[Any, list[str] | None]:
        """Metadata column ``number``'s stored array, and a string column's distinct values."""
        raise NotImplementedError(f"{type(self).__name__} stores no metadata columns")

    def _live_handle(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            # After a fork the parent's handle must not be used (LMDB and HDF5 both say so).
            self._handle = self._open()
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._close(self._handle)
        self._handle = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "strict": self.strict}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], strict=state.get("strict", True))

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # --- metadata ---------------------------------------------------------------------------
    @property
    def header(self) -> StoreHeader:
        if self._header is None:
            handle = self._live_handle()
            header = self._read_header(handle)
            for problem in self._check_header(handle, header):
                if self.strict:
                    raise CorruptStoreError(self.path, problem)
                self.problems.append(problem)
            self._header = header
        return self._header

    @property
    def table(self) -> RecordTable:
        if self._table is None:
            self._table = self._read_table(self._live_handle(), self.header)
        return self._table

    @property
    def metadata_columns(self) -> tuple[MetadataColumn, ...]:
        """The per-record metadata columns (name, kind, dtype), in the order they were written."""
        return self.header.columns(self.path)

    @property
    def metadata(self) -> dict[str, np.ndarray]:
        """Per-record metadata, name -> array aligned with record indices (read-only arrays).

        Arrays are int64, float64 or float32, bool, or NumPy ``str``; a store packed without
        metadata columns (or before they existed) gives ``{}``. Read on first use.
        """
        if self._metadata is None:
            handle, count = self._live_handle(), self.header.count
            columns = {}
            for number, column in enumerate(self.metadata_columns):
                stored, values = self._read_column(handle, number, column)
                array = decode_column(column, stored, values, count, self.path)
                array.flags.writeable = False  # shared by every caller: nobody may change it
                columns[column.name] = array
            self._metadata = columns
        return dict(self._metadata)

    # --- records ----------------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.path}: record {index} out of range (store has {n})")
        return index % n

    @contextmanager
    def _reading(self, index: int) -> Iterator[None]:
        """Damage met reading record ``index`` (a missing key, a bad page, an I/O error or a file
        cut short under the reader) raised as one CorruptRecordError naming the record."""
        try:
            yield
        except KeyError:
            raise self._corrupt(index, "record is missing from the store") from None
        except CorruptRecordError:
            raise
        except CorruptStoreError as exc:
            raise self._corrupt(index, exc.reason) from None
        except OSError as exc:
            raise self._corrupt(index, f"cannot be read ({exc})") from None

    def read(self, index: int, verify: bool = True) -> bytes:
        """The stored bytes of record ``index``; checks its checksum unless ``verify=False``.

        Where the record lies and its size are checked whatever ``verify`` says.
        """
        index = self._check_index(index)
        table = self.table  # damage found opening the store is the store's, not this record's
        handle = self._live_handle()
        with self._reading(index):
            data = self._read_payload(handle, index)
        if verify and checksum(data) != int(table.checksums[index]):
            raise self._corrupt(index, "checksum mismatch (the stored bytes changed)")
        return data

    def _payload_spans(self, handle: Any, index: int) -> list[tuple[Any, int, int]] | None:
        """Where record ``index``'s bytes lie: ``(file, offset, size)`` pieces (checked), or None
        when only ``_read_payload`` can read them."""
        return None

    def read_into(self, index: int, out: memoryview, verify: bool = True) -> int:
        """Read record ``index`` straight into ``out`` (the same checks as ``read``, one copy
        less); return its size. ``out`` must hold at least the record's table size."""
        index = self._check_index(index)
        table = self.table
        size = int(table.nbytes[index])
        handle = self._live_handle()
        with self._reading(index):
            spans = self._payload_spans(handle, index)
            if spans is None:
                data = self.read(index, verify)
                out[: len(data)] = data
                return len(data)
            if size > len(out) or sum(s for _, _, s in spans) != size:
                raise self._corrupt(index, f"its stored size differs from the record table's ({size:,} bytes)")
            position = 0
            for file, offset, length in spans:
                file.read_into(offset, out[position : position + length])
                position += length
        if verify and checksum(out[:size]) != int(table.checksums[index]):
            raise self._corrupt(index, "checksum mismatch (the stored bytes changed)")
        return size

    def get(self, index: int) -> tuple[bytes | np.ndarray, int]:
        """The payload of record ``index`` (bytes, or an array for raw stores) and its label."""
        data = self.read(index)
        index = self._check_index(index)
        payload = self._as_array(index, data) if self.header.payload == "raw" else data
        return payload, int(self.table.labels[index])

    def decode(self, index: int, window: Window | None = None, *, into: np.ndarray | None = None,
               verify: bool = True) -> np.ndarray:
        """Record ``index`` as an ``HxWxC`` array (uint8, or uint16 for 16-bit sources); with a
        ``window``, only that part (a raw record's: a view); ``into``: see ``codecs.images.decode``;
        the checksum checked unless ``verify=False``."""
        index = self._check_index(index)
        data = self.read(index, verify)
        try:
            if self.header.payload == "raw":
                array = self._as_array(index, data)
                return array if window is None else cut_window(array, window, self.path)
            return images.decode(data, path=f"{self.path}[{index}]", window=window, into=into)
        except images.BadInputError as exc:
            raise self._corrupt(index, exc.reason) from None

    def _as_array(self, index: int, data: bytes) -> np.ndarray:
        shape = tuple(int(s) for s in self.table.shapes[index])
        code = int(self.table.dtypes[index])
        try:
            dtype = np.dtype(self.header.dtypes[code]).newbyteorder("<")
            return np.frombuffer(data, dtype=dtype).reshape(shape)
        except (IndexError, TypeError, ValueError):  # a damaged record table
            raise self._corrupt(index, f"{len(data):,} bytes do not hold a {shape} array of dtype "
                                f"code {code}") from None

    def _corrupt(self, index: int, reason: str) -> CorruptRecordError:
        source = self.table.paths[index] if self._table is not None else None
        return CorruptRecordError(self.path, index, source, reason)

    def _damage(self, reason: str) -> CorruptStoreError:
        return CorruptStoreError(self.path, reason)


class StoreWriter(ABC):
    """Writes one store at a temporary path; the packer renames it into place when complete."""

    version: int = 1  # the format_version its stores carry (docs/FORMAT.md, "Versioning")

    def __init__(self, path: str, size_hint: int) -> None:
        self.path = path
        self.size_hint = size_hint
        self.count = 0

    @abstractmethod
    def append(self, payload: bytes) -> None:
        """Add the next record (index = number of records appended before)."""

    @abstractmethod
    def finish(self, header: StoreHeader, table: RecordTable,
               metadata: Mapping[str, Any] | None = None) -> None:
        """Write the header and per-record arrays, flush and fsync, close.

        ``metadata``: per-record metadata columns, name -> one value per record (see
        ``fastload.stores.metadata.as_column`` for the accepted dtypes); the writer records
        their descriptions in the header's ``metadata_columns``.
        """

    @abstractmethod
    def abort(self) -> None:
        """Close without finishing; the caller removes the temporary file."""
