"""The one interface every collection of records implements: a packed store, several shards
read as one, image files read in place. Callers (the backends, inspect, splits, the Loader) use
only this: none asks what kind of source it holds.

A source is made of ``shards``: the parts that each live in one file or folder, in record order
(a single store or a folder of files is its own only shard). What a part needs in another
process is its ``path`` (a store, reopened through the format registry) or, for files read in
place, ``files``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..codecs.base import Window
from ..errors import CorruptRecordError
from .format import StoreHeader
from .metadata import MetadataColumn

__all__ = ["HeaderFacts", "RecordSource"]


class HeaderFacts:
    """What a store's header answers alone: its count, classes and channels (no record read,
    and for a shard in object storage no download)."""

    header: StoreHeader

    def __len__(self) -> int:
        return self.header.count

    @property
    def classes(self) -> list[str]:
        return list(self.header.classes)

    @property
    def channels(self) -> int:
        return self.header.channels


class RecordSource(HeaderFacts, ABC):
    """Records by index: count, labels, classes, per-record shapes and sizes, bytes, arrays.

    Attributes:
        path: what messages name it by (a store's file, the first shard's, the folder read).
        header: the store header (for files read in place, one made from their probes).
    """

    path: str
    header: StoreHeader

    # --- what every source must say -------------------------------------------------------------
    @property
    @abstractmethod
    def table(self) -> Any:
        """Per-record arrays (``labels``, ``shapes``, ``nbytes``, ``paths``; stores add more)."""

    @abstractmethod
    def read(self, index: int, verify: bool = True) -> bytes:
        """The stored bytes of record ``index``; its checksum checked unless ``verify=False``."""

    @abstractmethod
    def decode(self, index: int, window: Window | None = None, *, into: np.ndarray | None = None,
               verify: bool = True) -> np.ndarray:
        """Record ``index`` as an ``HxWxC`` array, by the decode policy (docs/FORMAT.md); with a
        ``window`` (top, left, height, width), only that part of it; ``into``: a flat uint8 buffer
        the result may be laid out at the start of (``codecs.images.decode``); its checksum
        checked unless ``verify=False``, as ``read``."""

    def close(self) -> None:  # noqa: B027 - most sources hold no handle: nothing to release
        """Release open handles (a source reopens them when read again)."""

    # --- derived, the same for every source ---------------------------------------------------------
    @property
    def shards(self) -> Sequence[RecordSource]:
        """The parts of one file or folder each, in record order: ``[self]`` unless sharded."""
        return [self]

    @property
    def files(self) -> tuple[str, ...]:
        """The files records are read from in place, one per record (a packed store: none; its
        records live inside its own files, reopened from ``path``)."""
        return ()

    def reopen_args(self) -> tuple[list[str], dict[str, Any]]:
        """What another process passes to ``open_store(paths, **options)`` to open this source
        again: its shards' paths, no options (a store at a URL adds its cache settings)."""
        return [s.path for s in self.shards], {}

    @property
    def labels(self) -> np.ndarray:
        """int64 labels aligned with record indices (-1 for unlabelled records)."""
        return self.table.labels

    @property
    def paths(self) -> list[str]:
        """Each record's source path, for messages (what it was packed from, or the file)."""
        return self.table.paths

    @property
    def metadata_columns(self) -> tuple[MetadataColumn, ...]:
        return ()

    @property
    def metadata(self) -> dict[str, np.ndarray]:
        """Per-record metadata columns, name -> array aligned with record indices."""
        return {}

    def record_shapes(self) -> np.ndarray:
        """``(N, 3)`` int64 height, width, channels of every record (after the decode policy)."""
        return np.concatenate([np.asarray(s.table.shapes, np.int64).reshape(-1, 3) for s in self.shards])

    def record_nbytes(self) -> np.ndarray:
        """``(N,)`` int64 stored size of every record."""
        return np.concatenate([np.asarray(s.table.nbytes, np.int64).reshape(-1) for s in self.shards])

    def get(self, index: int) -> tuple[bytes | np.ndarray, int]:
        """The payload of record ``index`` (bytes, or an array for raw stores) and its label."""
        return self.read(index), int(self.table.labels[index])

    def read_into(self, index: int, out: memoryview, verify: bool = True) -> int:
        """Record ``index``'s bytes written into ``out``; their size. Sources that can read
        straight into ``out`` (one copy less) override this."""
        data = self.read(index, verify)
        if len(data) > len(out):
            raise self.too_large(index, len(data), len(out))
        out[: len(data)] = data
        return len(data)

    def too_large(self, index: int, size: int, room: int) -> Exception:
        """The error for a record larger than the room its table promised."""
        return CorruptRecordError(self.path, index, None, f"its payload ({size:,} bytes) is larger than the "
                                  f"record table says ({room:,})")

    def check_structure(self) -> tuple[list[str], dict[int, str]]:
        """The whole-part check of ``fastload verify``, beyond reading each record: problems
        of the source, and of single records by index."""
        return [], {}

    def verify_record(self, index: int) -> str | None:
        """None if record ``index`` reads back intact, else the reason it does not."""
        try:
            self.read(index)
        except CorruptRecordError as exc:
            return exc.reason
        return None

    def __enter__(self) -> RecordSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
