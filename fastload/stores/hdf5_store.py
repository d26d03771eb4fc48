"""HDF5 stores: every payload back to back in one uint8 dataset, sliced by an offsets array.

Datasets: ``data`` (uint8, chunked), ``offsets`` (uint64, count + 1), ``paths`` (UTF-8 strings)
and one dataset per array in ARRAY_DTYPES. The JSON header is the root attribute ``fastload``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MissingExtraError, StoreFormatError
from .base import StoreReader, StoreWriter
from .format import ARRAY_DTYPES, RecordTable, StoreHeader

__all__ = ["Hdf5Reader", "Hdf5Writer"]

_CHUNK = 1 << 20
_BUFFER = 16 << 20


def _h5py():
    try:
        import h5py
    except ImportError:
        raise MissingExtraError("h5py", "hdf5", "HDF5 stores") from None
    return h5py


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

    def _read_payload(self, handle: Any, index: int) -> bytes:
        offsets = handle[2]
        start, stop = int(offsets[index]), int(offsets[index + 1])
        return handle[1][start:stop].tobytes()


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
        self._data.resize((start + len(block),))
        self._data[start:] = block
        self._buffer, self._buffered = [], 0

    def finish(self, header: StoreHeader, table: RecordTable) -> None:
        h5py = _h5py()
        self._flush()
        f = self._file
        f.create_dataset("offsets", data=np.asarray(self._offsets, dtype="<u8"))
        for name, array in table.arrays().items():
            f.create_dataset(name, data=np.ascontiguousarray(array, dtype=ARRAY_DTYPES[name][0]))
        f.create_dataset("paths", data=table.paths, dtype=h5py.string_dtype("utf-8"))
        f.attrs["fastload"] = header.to_json().decode("utf-8")
        f.flush()
        f.close()

    def abort(self) -> None:
        try:
            self._file.close()
        except Exception:  # already broken (disk full): nothing left to close cleanly
            pass
