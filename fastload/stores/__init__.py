"""On-disk store formats behind one reader/writer interface, and ``open_store``."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import StoreFormatError
from .base import StoreReader, StoreWriter
from .format import FORMAT_VERSION, RecordTable, StoreHeader
from .hdf5_store import Hdf5Reader, Hdf5Writer
from .lmdb_store import LmdbReader, LmdbWriter
from .metadata import MetadataBuilder, MetadataColumn
from .sharded import ShardedStore

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "MetadataBuilder",
    "MetadataColumn",
    "RecordTable",
    "ShardedStore",
    "Store",
    "StoreFormat",
    "StoreHeader",
    "StoreReader",
    "StoreWriter",
    "open_store",
]

Store = StoreReader | ShardedStore


@dataclass(frozen=True)
class StoreFormat:
    name: str
    extension: str
    reader: type[StoreReader]
    writer: type[StoreWriter]


FORMATS: dict[str, StoreFormat] = {
    "lmdb": StoreFormat("lmdb", ".lmdb", LmdbReader, LmdbWriter),
    "hdf5": StoreFormat("hdf5", ".h5", Hdf5Reader, Hdf5Writer),
}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_LMDB_MAGIC = (0xBEEFC0DE).to_bytes(4, "little")


def _hdf5_structures(path: str) -> bool:
    """Signatures of HDF5 1.10+ structures (object headers, fractal and global heaps, B-tree and
    chunk index headers) in the first 64 KiB: an HDF5 file whose first bytes were destroyed."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return sum(sig in head for sig in (b"OHDR", b"FRHP", b"GCOL", b"BTHD", b"EAHD", b"FHDB")) >= 2


def _second_lmdb_meta(path: str) -> bool:
    """LMDB's second meta page, at one page size (4 to 64 KiB) into the file."""
    with open(path, "rb") as f:
        for page in (4096, 8192, 16384, 32768, 65536):
            f.seek(page + 16)
            if f.read(4) == _LMDB_MAGIC:
                return True
    return False


def _sniff(path: str) -> StoreFormat:
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "data.mdb")):
            return FORMATS["lmdb"]  # an LMDB environment directory
        raise StoreFormatError(path, "is a folder, not a store; pack it first: fastload pack --format lmdb PATH")
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such store") from None
    if head.startswith(_HDF5_SIGNATURE):
        return FORMATS["hdf5"]
    if head[16:20] == _LMDB_MAGIC:
        return FORMATS["lmdb"]
    # A store whose first bytes were destroyed: its reader says so, rather than "not a store".
    ext = os.path.splitext(path)[1].lower()
    if ext in (".h5", ".hdf5"):
        if _hdf5_structures(path):
            return FORMATS["hdf5"]
        raise StoreFormatError(path, "named like HDF5 but does not start with the HDF5 signature")
    if ext == ".lmdb":
        if _second_lmdb_meta(path):
            return FORMATS["lmdb"]
        raise StoreFormatError(path, "named like LMDB but is not an LMDB file")
    raise StoreFormatError(path, "neither an LMDB nor an HDF5 file; not a fastload store")


def _expand(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        path = os.fspath(path)
        if glob.has_magic(path):
            found = sorted(glob.glob(path))
            if not found:
                raise FileNotFoundError(f"{path}: no store matches this pattern")
            return found
        return [path]
    return [os.fspath(p) for p in path]


def open_store(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
               strict: bool = True) -> Store:
    """Open a packed store for reading: one path, a glob of shards, or a list of shards.

    The format (LMDB or HDF5) is recognised from the file's content. Several shards are read
    as one dataset, records in the order given (a glob is sorted).

    Opening checks that each file is whole (not truncated, its index consistent with its
    header); a damaged file raises ``CorruptStoreError`` naming it. ``strict=False`` opens it
    anyway where reading can go on (``store.problems`` then lists what was found), to verify
    or salvage it: every read is still checked.

    >>> store = open_store("data.lmdb")          # doctest: +SKIP
    >>> payload, label = store.get(0)            # doctest: +SKIP
    """
    paths = _expand(path)
    readers = [_sniff(p).reader(p, strict=strict) for p in paths]
    try:
        for reader in readers:
            reader.header  # noqa: B018 - validate now: a store that is not ours fails here
    except BaseException:
        for reader in readers:  # release the handles: the file may be repacked or rewritten
            reader.close()
        raise
    if len(readers) == 1:
        return readers[0]
    return ShardedStore(readers)
