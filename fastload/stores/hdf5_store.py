"""HDF5 stores: every payload back to back in one uint8 dataset, sliced by an offsets array.

Datasets: ``data`` (uint8, chunked), ``offsets`` (uint64, count + 1), ``paths`` and one dataset
per array in ARRAY_DTYPES. The JSON header is the root attribute ``fastload``, a fixed-length
byte string. Metadata columns live in the group ``metadata``: ``N`` (column N's array) and, for
strings, ``N.values`` (its distinct values).

Format version 2 keeps every string (the paths, a column's values) as a UTF-8 JSON blob in a
uint8 dataset, never as an HDF5 variable-length string: those live in HDF5's global heap, the
one structure of its format without a checksum, which HDF5 trusts (a zeroed heap collection
made it loop forever, a flipped length allocate gigabytes). Version 1 stores (variable-length
strings) are still read, through h5py.
"""

from __future__ import annotations

import array as _array
import dataclasses
import errno
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from .._optional import require
from ..errors import CorruptStoreError, FastloadError, StoreFormatError
from .base import StoreReader, StoreWriter
from .fileio import ReadOnlyFile
from .format import ARRAY_DTYPES, RecordTable, StoreHeader, strings_blob, strings_from_blob
from .metadata import MetadataColumn, encode_metadata
from .registry import Match, StoreFormat, read_head

__all__ = ["FORMAT", "Hdf5Reader", "Hdf5Writer"]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
BLOB_STRINGS = 2  # the first format version whose strings are JSON blobs (module docstring)

_CHUNK = 1 << 20
_BUFFER = 16 << 20
_RESERVE_MARGIN = 4 * _CHUNK  # partial chunks and HDF5's own metadata
# HDF5 cannot recover from a failed write: closing (or even freeing) the file afterwards can
# crash the interpreter. Such files are kept referenced here, never closed.
_UNCLOSABLE: list[Any] = []


def _reserve(fd: int, path: str, size: int) -> None:
    """Make sure ``size`` bytes of ``path`` are allocated on disk, so HDF5 never meets a full
    disk (ENOSPC) or a file-size limit (EFBIG) mid-write; raise that OSError here instead."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
        return
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free  # macOS: check only
    if size - os.fstat(fd).st_size > free:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def _h5py():
    return require("h5py", None, "HDF5 stores")


def _trim_to_end_of_allocation(path: str) -> None:
    """Give back the unused tail of the reservation: cut the file at HDF5's end-of-file address,
    read from the version 2/3 superblock (signature, version, sizes, flags, base address,
    extension address, then end-of-file address at byte 28)."""
    with open(path, "r+b") as f:
        head = f.read(36)
        if head[:8] != SIGNATURE or head[8] not in (2, 3) or head[9] != 8:
            return  # another superblock layout: keep the file as it is
        end = int.from_bytes(head[28:36], "little")
        if 0 < end < os.fstat(f.fileno()).st_size:
            f.truncate(end)


@contextmanager
def _hdf5_errors(path: str, what: str) -> Iterator[None]:
    """HDF5 reports damage as OSError, KeyError, ValueError, ... (whatever the damaged structure
    makes it raise): any exception out of h5py for a file that has the HDF5 signature is damage."""
    try:
        yield
    except FastloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - translated, never swallowed
        raise CorruptStoreError(path, f"{what} ({type(exc).__name__}: {exc})") from None


def _open_error(path: str, exc: BaseException) -> CorruptStoreError:
    found = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", str(exc))
    if found:
        have, need = int(found.group(1)), int(found.group(2))
        return CorruptStoreError(path, f"truncated: {have:,} of {need:,} bytes")
    return CorruptStoreError(path, f"HDF5 cannot open it ({type(exc).__name__}: {exc})")


class _Handle:
    """One process's view of an HDF5 store: the h5py file (metadata, and records of layouts
    HDF5 must decode), and for uncompressed data the file offset of each chunk, to read records
    with ``pread`` instead of h5py: no global HDF5 lock, no chunk cache, one copy."""

    def __init__(self, file: Any, raw: ReadOnlyFile) -> None:
        self.file = file
        self.raw = raw
        self.data: Any = None
        self.offsets = _array.array("Q")
        self.extent = 0
        self.direct = False  # records read with pread, not h5py
        self.base: int | None = None  # contiguous data: where it starts in the file
        self.chunk = 0  # chunked data: chunk length, and where each chunk starts (-1: none)
        self.chunks = _array.array("q")
        self.sizes = _array.array("q")


class Hdf5Reader(StoreReader):
    """Reads an HDF5 store; uncompressed ``data`` (what the writer makes) bypasses h5py."""

    extension = ".h5"

    def _open(self) -> _Handle:
        h5py = _h5py()
        try:
            f = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such store") from None
        except Exception as exc:  # noqa: BLE001 - the signature was HDF5's: this is damage
            raise _open_error(self.path, exc) from None
        handle = None
        try:
            raw = ReadOnlyFile(self.path)
            handle = _Handle(f, raw)
            with _hdf5_errors(self.path, "its HDF5 metadata is damaged"):
                if "data" not in f or "offsets" not in f:
                    raise StoreFormatError(self.path, "an HDF5 file, but not a fastload store (no data/offsets)")
                data, offsets = f["data"], f["offsets"]
                if data.ndim != 1 or offsets.ndim != 1 or offsets.dtype.kind not in "iu":
                    raise self._damage(f"datasets data {data.shape} and offsets {offsets.shape} are not 1-D")
                self._check_extent(offsets, raw.size)
                handle.data, handle.extent = data, int(data.shape[0])
                handle.offsets.frombytes(offsets[()].astype("=u8").tobytes())
                self._map_chunks(handle)
            return handle
        except BaseException:
            if handle is not None:
                handle.raw.close()
            f.close()
            raise

    def _check_extent(self, dataset: Any, file_size: int) -> None:
        """Refuse a dataset whose (damaged) shape claims more bytes than the file holds, before
        reading it allocates them."""
        if dataset.dtype.kind != "O" and dataset.size * dataset.dtype.itemsize > file_size:
            raise self._damage(f"dataset {dataset.name!r} claims {dataset.shape}, more than the file holds")

    def _map_chunks(self, handle: _Handle) -> None:
        """Find where the data lies in the file, when HDF5 stores it as plain bytes (no filters);
        check that it all lies inside the file."""
        data = handle.data
        plist = data.id.get_create_plist()
        if data.dtype != np.uint8 or plist.get_nfilters():
            return  # compressed, or a foreign layout: read through h5py
        layout = plist.get_layout()
        if layout == _h5py().h5d.CONTIGUOUS and data.id.get_offset() is not None:
            handle.base = data.id.get_offset()
            ends = [handle.base + handle.extent]
        elif layout == _h5py().h5d.CHUNKED and hasattr(data.id, "chunk_iter"):
            ends = self._chunk_table(handle)
        else:
            return
        handle.direct = True
        if ends and max(ends) > handle.raw.size:
            problem = f"truncated: {handle.raw.size:,} of {max(ends):,} bytes"
            if self.strict:
                raise self._damage(problem)
            self.problems.append(problem)

    def _chunk_table(self, handle: _Handle) -> list[int]:
        data = handle.data
        handle.chunk = int(data.chunks[0])
        count = -(-handle.extent // handle.chunk)
        handle.chunks = _array.array("q", [-1]) * count
        ends = []

        def note(info: Any) -> None:
            k = info.chunk_offset[0] // handle.chunk
            if info.filter_mask or info.size != handle.chunk or not 0 <= k < count:
                raise self._damage(f"chunk at {info.chunk_offset} of dataset 'data' is damaged "
                                   f"({info.size} bytes, filter mask {info.filter_mask})")
            handle.chunks[k] = info.byte_offset
            ends.append(info.byte_offset + info.size)

        data.id.chunk_iter(note)
        return ends

    def _close(self, handle: _Handle) -> None:
        handle.raw.close()
        handle.file.close()

    def _read_header(self, handle: _Handle) -> StoreHeader:
        # Version 2 writes a fixed-length byte string (in the checksummed object header), 1 a
        # variable-length one: h5py reads either, and the version is known only after.
        with _hdf5_errors(self.path, "its HDF5 metadata is damaged"):
            raw = handle.file.attrs.get("fastload")
        if raw is None:
            raise StoreFormatError(self.path, "an HDF5 file, but not a fastload store (no fastload header)")
        return StoreHeader.from_json(raw, self.path)

    def _check_header(self, handle: _Handle, header: StoreHeader) -> list[str]:
        if len(handle.offsets) != header.count + 1:
            return [f"the offsets array has {len(handle.offsets):,} entries for {header.count:,} records"]
        return []

    def _read_table(self, handle: _Handle, header: StoreHeader) -> RecordTable:
        f = handle.file
        blobs = header.format_version >= BLOB_STRINGS
        with _hdf5_errors(self.path, "its record table is damaged"):
            for name in [*ARRAY_DTYPES, "paths"]:
                if name not in f:
                    raise StoreFormatError(self.path, f"the per-record array {name!r} is missing")
                if f[name].shape[:1] != (header.count,) and not (blobs and name == "paths"):
                    raise self._damage(f"dataset {name!r} has shape {f[name].shape} for {header.count:,} records")
                self._check_extent(f[name], handle.raw.size)
            arrays = {name: f[name][()] for name in ARRAY_DTYPES}
            paths = self._read_strings(handle, f["paths"], blobs, "the source paths")
        return RecordTable.from_arrays(arrays, paths, header.count, self.path)

    def _read_strings(self, handle: _Handle, dataset: Any, blob: bool, what: str) -> list[str]:
        """The strings of a dataset: a uint8 JSON blob (version 2), or variable-length strings
        (version 1, read by h5py)."""
        if not blob:
            return [p.decode("utf-8") if isinstance(p, bytes) else p for p in dataset[()]]
        if dataset.dtype != np.uint8 or dataset.ndim != 1:
            raise self._damage(f"dataset {dataset.name!r} is {dataset.dtype} {dataset.shape}, not the "
                               "uint8 JSON blob of format version 2")
        self._check_extent(dataset, handle.raw.size)
        return strings_from_blob(dataset[()].tobytes(), self.path, what)

    def _read_column(self, handle: _Handle, number: int, column: MetadataColumn) -> tuple[Any, list[str] | None]:
        with _hdf5_errors(self.path, f"metadata column {column.name!r} is damaged"):
            group = handle.file.get("metadata")
            if group is None or str(number) not in group:
                raise StoreFormatError(self.path, f"metadata column {column.name!r} is missing")
            stored = group[str(number)]
            self._check_extent(stored, handle.raw.size)
            values = group.get(f"{number}.values")
            if values is not None:
                values = self._read_strings(handle, values, self.header.format_version >= BLOB_STRINGS,
                                            f"metadata column {column.name!r}: its values")
            return stored[()], values

    def _payload_spans(self, handle: _Handle, index: int) -> list[tuple[ReadOnlyFile, int, int]] | None:
        start, stop = self._checked_offsets(handle, index)
        if handle.chunk:
            return [(handle.raw, offset, size) for offset, size in self._chunk_spans(handle, start, stop)]
        if handle.direct:
            return [(handle.raw, handle.base + start, stop - start)]
        return None  # a layout only h5py reads

    def _checked_offsets(self, handle: _Handle, index: int) -> tuple[int, int]:
        if not handle.sizes:
            handle.sizes.frombytes(self.table.nbytes.astype("=i8").tobytes())
        if index + 1 >= len(handle.offsets):  # only when opened despite a short offsets array
            raise self._damage("the offsets array has no entry for it")
        start, stop = handle.offsets[index], handle.offsets[index + 1]
        if not start <= stop <= handle.extent:
            raise self._damage(f"its offsets {start:,}..{stop:,} lie outside the data ({handle.extent:,} bytes)")
        if stop - start != handle.sizes[index]:
            raise self._damage(f"its offsets span {stop - start:,} bytes, the record table says "
                               f"{handle.sizes[index]:,}")
        return start, stop

    def _read_payload(self, handle: _Handle, index: int) -> bytes:
        start, stop = self._checked_offsets(handle, index)
        if handle.chunk:
            return self._read_chunked(handle, start, stop)
        if handle.direct:
            return handle.raw.read(handle.base + start, stop - start)
        with _hdf5_errors(self.path, "HDF5 cannot read it"):
            return handle.data[start:stop].tobytes()

    def _chunk_spans(self, handle: _Handle, start: int, stop: int) -> list[tuple[int, int]]:
        """(file offset, size) of each piece of data bytes ``start..stop`` (one per chunk)."""
        chunk = handle.chunk
        first, last = start // chunk, (stop - 1) // chunk if stop > start else start // chunk
        spans = []
        for k in range(first, last + 1):
            where = handle.chunks[k] if k < len(handle.chunks) else -1
            if where < 0:
                raise self._damage(f"its data chunk {k} is missing from the file")
            lo, hi = max(start, k * chunk), min(stop, (k + 1) * chunk)
            spans.append((where + lo - k * chunk, hi - lo))
        return spans

    def _read_chunked(self, handle: _Handle, start: int, stop: int) -> bytes:
        pieces = [handle.raw.read(offset, size) for offset, size in self._chunk_spans(handle, start, stop)]
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def check_structure(self) -> tuple[list[str], dict[int, str]]:
        """The offsets must run from 0, never decreasing, within the data, one record's nbytes
        apart; every chunk a record needs must be in the file."""
        handle = self._live_handle()
        problems = list(self.problems)
        offsets = np.frombuffer(handle.offsets, np.uint64).astype(np.int64)
        if len(offsets) and offsets[0] != 0:
            problems.append(f"the offsets array starts at {offsets[0]}, not 0")
        records: dict[int, str] = {}
        nbytes = self.table.nbytes.astype(np.int64)
        n = min(len(nbytes), len(offsets) - 1)  # they differ only when opened despite that
        spans = np.diff(offsets[: n + 1])
        for index in np.flatnonzero((spans != nbytes[:n]) | (offsets[1 : n + 1] > handle.extent)).tolist():
            records[index] = (f"its offsets {offsets[index]:,}..{offsets[index + 1]:,} do not hold its "
                              f"{nbytes[index]:,} bytes inside the data ({handle.extent:,} bytes)")
        if handle.chunk and len(handle.chunks):
            missing = np.flatnonzero(np.frombuffer(handle.chunks, np.int64) < 0)
            if len(missing):
                problems.append(f"{len(missing)} chunks of dataset 'data' are missing (first: {missing[0]})")
        return problems, records


def _metadata_bytes(columns: list) -> int:
    """Room the metadata columns take in the file (for the disk reservation)."""
    return sum(c.stored.nbytes + sum(len(v) * 4 + 64 for v in c.values or []) + 4096 for c in columns)


class Hdf5Writer(StoreWriter):
    version = BLOB_STRINGS
    def __init__(self, path: str, size_hint: int) -> None:
        super().__init__(path, size_hint)
        h5py = _h5py()
        self._file = h5py.File(path, "w", libver="latest")
        self._data = self._file.create_dataset("data", shape=(0,), maxshape=(None,), dtype="u1",
                                               chunks=(_CHUNK,))
        self._offsets = [0]
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._reserve_fd = os.open(path, os.O_RDWR)
        self._failed = False

    def append(self, payload: bytes) -> None:
        self._buffer.append(payload)
        self._buffered += len(payload)
        self._offsets.append(self._offsets[-1] + len(payload))
        self.count += 1
        if self._buffered >= _BUFFER:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        block = np.frombuffer(b"".join(self._buffer), dtype=np.uint8)
        start = self._data.shape[0]
        _reserve(self._reserve_fd, self.path, start + len(block) + _RESERVE_MARGIN)
        self._failed = True  # until HDF5 returns: a write that raises leaves the file unusable
        self._data.resize((start + len(block),))
        self._data[start:] = block
        self._failed = False
        self._buffer, self._buffered = [], 0

    def finish(self, header: StoreHeader, table: RecordTable,
               metadata: Mapping[str, Any] | None = None) -> None:
        self._flush()
        columns = encode_metadata(metadata, len(table.paths))
        header = dataclasses.replace(header, metadata_columns=[c.column.to_json() for c in columns],
                                     format_version=self.version)
        meta = header.to_json()
        paths = strings_blob(table.paths)
        meta_bytes = len(meta) + len(paths) + _metadata_bytes(columns)
        _reserve(self._reserve_fd, self.path, self._data.shape[0] + meta_bytes + 2 * _RESERVE_MARGIN)
        self._failed = True
        f = self._file
        f.create_dataset("offsets", data=np.asarray(self._offsets, dtype="<u8"))
        for name, array in table.arrays().items():
            f.create_dataset(name, data=np.ascontiguousarray(array, dtype=ARRAY_DTYPES[name][0]))
        f.create_dataset("paths", data=np.frombuffer(paths, np.uint8))
        if columns:
            group = f.create_group("metadata")
            for number, encoded in enumerate(columns):
                group.create_dataset(str(number), data=encoded.stored)
                if encoded.values is not None:
                    group.create_dataset(f"{number}.values",
                                         data=np.frombuffer(strings_blob(encoded.values), np.uint8))
        # Fixed length (numpy bytes): no variable-length string, so no global heap in the file.
        f.attrs["fastload"] = np.bytes_(meta)
        f.flush()
        f.close()
        self._failed = False
        self._release_reservation()
        _trim_to_end_of_allocation(self.path)

    def _release_reservation(self) -> None:
        if self._reserve_fd >= 0:
            os.close(self._reserve_fd)
            self._reserve_fd = -1

    def abort(self) -> None:
        self._release_reservation()
        if self._failed:
            _UNCLOSABLE.append(self._file)
            return
        try:
            self._file.close()
        except Exception:  # nothing left to close cleanly; the caller deletes the file
            pass


def _hdf5_structures(path: str) -> bool:
    """Signatures of HDF5 1.10+ structures (object headers, fractal and global heaps, B-tree and
    chunk index headers) in the first 64 KiB: an HDF5 file whose first bytes were destroyed."""
    head = read_head(path, 1 << 16)
    return sum(sig in head for sig in (b"OHDR", b"FRHP", b"GCOL", b"BTHD", b"EAHD", b"FHDB")) >= 2


def recognise(path: str) -> Match:
    """An HDF5 file: its signature, or, named ``.h5``/``.hdf5``, its structures' signatures."""
    if os.path.isdir(path):
        return Match.NONE
    if read_head(path, len(SIGNATURE)) == SIGNATURE:
        return Match.CONTENT
    if not FORMAT.named_like(path):
        return Match.NONE
    return Match.CONTENT if _hdf5_structures(path) else Match.NAME


FORMAT = StoreFormat(name="hdf5", extensions=(".h5", ".hdf5"), recognise=recognise, open=Hdf5Reader.opened,
                     writer=Hdf5Writer, misnamed="named like HDF5 but does not start with the HDF5 signature")
