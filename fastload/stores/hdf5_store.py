"""HDF5 stores: every payload back to back in one uint8 dataset, sliced by an offsets array.

Datasets: ``data`` (uint8, chunked), ``offsets`` (uint64, count + 1), ``paths`` (UTF-8 strings)
and one dataset per array in ARRAY_DTYPES. The JSON header is the root attribute ``fastload``.
Metadata columns live in the group ``metadata``: ``N`` (column N's array) and, for strings,
``N.values`` (its distinct values, UTF-8 strings).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import MissingExtraError, StoreFormatError
from .base import StoreReader, StoreWriter
from .format import ARRAY_DTYPES, RecordTable, StoreHeader
from .metadata import MetadataColumn, encode_metadata

__all__ = ["Hdf5Reader", "Hdf5Writer"]

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
    try:
        import h5py
    except ImportError:
        raise MissingExtraError("h5py", "hdf5", "HDF5 stores") from None
    return h5py


def _trim_to_end_of_allocation(path: str) -> None:
    """Give back the unused tail of the reservation: cut the file at HDF5's end-of-file address,
    read from the version 2/3 superblock (signature, version, sizes, flags, base address,
    extension address, then end-of-file address at byte 28)."""
    with open(path, "r+b") as f:
        head = f.read(36)
        if head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] not in (2, 3) or head[9] != 8:
            return  # another superblock layout: keep the file as it is
        end = int.from_bytes(head[28:36], "little")
        if 0 < end < os.fstat(f.fileno()).st_size:
            f.truncate(end)


class Hdf5Reader(StoreReader):
    extension = ".h5"

    def _open(self) -> Any:
        h5py = _h5py()
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreFormatError(self.path, f"not a readable HDF5 file ({exc})") from None
        if "data" not in f or "offsets" not in f:
            f.close()
            raise StoreFormatError(self.path, "an HDF5 file, but not a fastload store (no data/offsets)")
        return f, f["data"], f["offsets"][()]

    def _close(self, handle: Any) -> None:
        handle[0].close()

    def _read_header(self, handle: Any) -> StoreHeader:
        raw = handle[0].attrs.get("fastload")
        if raw is None:
            raise StoreFormatError(self.path, "an HDF5 file, but not a fastload store (no fastload header)")
        return StoreHeader.from_json(raw, self.path)

    def _read_table(self, handle: Any, header: StoreHeader) -> RecordTable:
        f = handle[0]
        try:
            arrays = {name: f[name][()] for name in ARRAY_DTYPES}
        except KeyError as exc:
            raise StoreFormatError(self.path, f"a per-record array is missing: {exc}") from None
        paths = [p.decode("utf-8") if isinstance(p, bytes) else p for p in f["paths"][()]]
        if len(handle[2]) != header.count + 1:
            raise StoreFormatError(self.path, "the offsets array does not match the record count")
        return RecordTable.from_arrays(arrays, paths, header.count, self.path)

    def _read_column(self, handle: Any, number: int, column: MetadataColumn) -> tuple[Any, list[str] | None]:
        group = handle[0].get("metadata")
        if group is None or str(number) not in group:
            raise StoreFormatError(self.path, f"metadata column {column.name!r} is missing")
        values = group.get(f"{number}.values")
        if values is not None:
            values = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values[()]]
        return group[str(number)][()], values

    def _read_payload(self, handle: Any, index: int) -> bytes:
        offsets = handle[2]
        start, stop = int(offsets[index]), int(offsets[index + 1])
        return handle[1][start:stop].tobytes()


def _metadata_bytes(columns: list) -> int:
    """Room the metadata columns take in the file (for the disk reservation)."""
    return sum(c.stored.nbytes + sum(len(v) * 4 + 64 for v in c.values or []) + 4096 for c in columns)


class Hdf5Writer(StoreWriter):
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
        h5py = _h5py()
        self._flush()
        columns = encode_metadata(metadata, len(table.paths))
        header = dataclasses.replace(header, metadata_columns=[c.column.to_json() for c in columns])
        meta = header.to_json()
        paths = [p.encode("utf-8") for p in table.paths]
        meta_bytes = len(meta) + sum(map(len, paths)) + 64 * (len(paths) + 1) + _metadata_bytes(columns)
        _reserve(self._reserve_fd, self.path, self._data.shape[0] + meta_bytes + 2 * _RESERVE_MARGIN)
        self._failed = True
        f = self._file
        f.create_dataset("offsets", data=np.asarray(self._offsets, dtype="<u8"))
        for name, array in table.arrays().items():
            f.create_dataset(name, data=np.ascontiguousarray(array, dtype=ARRAY_DTYPES[name][0]))
        f.create_dataset("paths", data=table.paths, dtype=h5py.string_dtype("utf-8"))
        if columns:
            group = f.create_group("metadata")
            for number, encoded in enumerate(columns):
                group.create_dataset(str(number), data=encoded.stored)
                if encoded.values is not None:
                    # backslashreplace: a lone surrogate is written as its escape, never fails.
                    values = [v.encode("utf-8", "backslashreplace") for v in encoded.values]
                    group.create_dataset(f"{number}.values", data=values,
                                         dtype=h5py.string_dtype("utf-8"))
        f.attrs["fastload"] = meta.decode("utf-8")
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
