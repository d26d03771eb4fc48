"""Record sources behind one interface (``RecordSource``), their formats as plugins in one
registry (``REGISTRY``), and ``open_store``.

Built in: ``lmdb`` and ``hdf5`` (packed stores, written by ``fastload pack``), ``sharded`` (a
glob of shards read as one) and ``files`` (image files read in place, which ``open_store``
refuses: the Loader reads them), and ``remote`` (a store in object storage, ``s3://...``, read
through a bounded local shard cache: fastload.stores.remote), which claims the URL schemes. A new
kind registers a ``StoreFormat``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from . import files, hdf5_store, lmdb_store, remote
from .base import StoreReader, StoreWriter
from .format import FORMAT_VERSION, RecordTable, StoreHeader
from .metadata import MetadataBuilder, MetadataColumn
from .registry import FormatRegistry, Match, StoreFormat
from .sharded import ShardedStore, open_shards, sharded_format
from .source import RecordSource

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "FormatRegistry",
    "Match",
    "MetadataBuilder",
    "MetadataColumn",
    "REGISTRY",
    "RecordSource",
    "RecordTable",
    "ShardedStore",
    "Store",
    "StoreFormat",
    "StoreHeader",
    "StoreReader",
    "StoreWriter",
    "open_store",
]

Store = RecordSource


def _open_one(path: str, strict: bool, **options: Any) -> RecordSource:
    fmt = REGISTRY.identify(path)
    if options and not fmt.schemes:
        raise TypeError(f"{sorted(options)} apply to stores at URLs (s3://...), not to {path!r}")
    return fmt.open(path, strict=strict, **options)


# The formats this process knows; a plugin adds its own with REGISTRY.register(StoreFormat(...)).
REGISTRY = FormatRegistry()
for _format in (lmdb_store.FORMAT, hdf5_store.FORMAT, sharded_format(_open_one), files.FORMAT,
                remote.remote_format(_open_one)):
    REGISTRY.register(_format)

# The formats ``fastload pack`` writes, by name (a live view of the registry).
FORMATS: Mapping[str, StoreFormat] = REGISTRY.writable


def open_store(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
               strict: bool = True, **options: Any) -> RecordSource:
    """Open a packed store for reading: one path, a glob of shards, or a list of shards.

    The format is recognised by the registry, from the file's content (or a URL's scheme).
    Several shards are read as one dataset, records in the order given (a glob is sorted).

    Opening checks that each file is whole (not truncated, its index consistent with its
    header); a damaged file raises ``CorruptStoreError`` naming it. ``strict=False`` opens it
    anyway where reading can go on (``store.problems`` then lists what was found), to verify
    or salvage it: every read is still checked.

    A URL (``s3://bucket/train.lmdb``, any fsspec URL) opens the store packed there
    (``fastload pack ... -o URL``) through a local shard cache; ``options`` are then the
    remote store's: ``cache_dir``, ``cache_limit``, ``storage_options`` (fastload.stores.remote).

    >>> store = open_store("data.lmdb")          # doctest: +SKIP
    >>> payload, label = store.get(0)            # doctest: +SKIP
    """
    if isinstance(path, (str, os.PathLike)):
        return _open_one(os.fspath(path), strict, **options)
    paths = [os.fspath(p) for p in path]
    if options and len(paths) == 1:
        return _open_one(paths[0], strict, **options)
    if options:
        raise TypeError(f"{sorted(options)} apply to one store at a URL, not to a list of {len(paths)} shards")
    return open_shards(paths, _open_one, strict=strict)
