"""The store format: a JSON header plus typed per-record arrays, shared by every backend.

See docs/FORMAT.md for the on-disk layout of each backend. Nothing here is pickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import CorruptStoreError, StoreFormatError
from .metadata import MetadataColumn

__all__ = ["MAGIC", "FORMAT_VERSION", "StoreHeader", "RecordTable", "ARRAY_DTYPES", "checksum",
           "strings_blob", "strings_from_blob"]

MAGIC = "fastload-store"
# The newest version this fastload reads (each writer says which it writes: docs/FORMAT.md).
FORMAT_VERSION = 2
CHECKSUM = "xxh3_64"

# Per-record arrays: name -> (dtype, trailing shape). Explicit little-endian on disk.
ARRAY_DTYPES: dict[str, tuple[str, tuple[int, ...]]] = {
    "labels": ("<i8", ()),
    "checksums": ("<u8", ()),
    "shapes": ("<u4", (3,)),  # height, width, channels after the decode policy
    "encodings": ("u1", ()),  # index into StoreHeader.encodings
    "dtypes": ("u1", ()),  # index into StoreHeader.dtypes
    "nbytes": ("<u8", ()),  # payload size in bytes
}


def checksum(data: bytes | memoryview | np.ndarray) -> int:
    """The record checksum: xxh3_64 of the payload bytes."""
    import xxhash

    return xxhash.xxh3_64_intdigest(data)


def strings_blob(strings: list[str]) -> bytes:
    """A list of strings as one UTF-8 JSON blob (how stores keep paths and string values)."""
    # backslashreplace: a lone surrogate (from a non-UTF-8 name) is written as its JSON escape.
    return json.dumps(list(strings), ensure_ascii=False).encode("utf-8", "backslashreplace")


def strings_from_blob(raw: bytes, path: str, what: str) -> list[str]:
    """The list of strings of ``strings_blob``; ``CorruptStoreError`` naming ``what`` if not one."""
    try:
        strings = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CorruptStoreError(path, f"{what} are not valid JSON") from None
    if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
        raise CorruptStoreError(path, f"{what} are not a list of strings")
    return strings


@dataclass
class StoreHeader:
    """The self-describing JSON header of one store (or one shard of a store)."""

    count: int
    payload: str  # "encoded": the source's bytes (or re-encoded); "raw": decoded arrays
    classes: list[str]
    encodings: list[str]
    dtypes: list[str]
    channels: int  # channels every record decodes to for training (max over records)
    skipped: list[dict[str, str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    shard: dict[str, int] = field(default_factory=lambda: {"index": 0, "count": 1})
    options: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    # Per-record metadata columns (MetadataColumn.to_json() each); set by the writer.
    metadata_columns: list[dict[str, str]] = field(default_factory=list)
    magic: str = MAGIC
    format_version: int = FORMAT_VERSION
    fastload_version: str = __version__
    checksum: str = CHECKSUM

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str, path: str) -> StoreHeader:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise CorruptStoreError(path, "the fastload header is not valid JSON") from None
        if not isinstance(data, dict) or data.get("magic") != MAGIC:
            raise StoreFormatError(path, "not a fastload store (its header lacks the fastload magic)")
        version = data.get("format_version")
        if not isinstance(version, int) or version < 1:
            raise StoreFormatError(path, f"the header's format_version {version!r} is not a valid version")
        if version > FORMAT_VERSION:
            raise StoreFormatError(
                path,
                f"store format version {version} is newer than this fastload ({__version__}) "
                f"reads (up to {FORMAT_VERSION}); upgrade fastload: pip install -U fastload",
            )
        if data.get("checksum") != CHECKSUM:
            raise StoreFormatError(path, f"unknown checksum {data.get('checksum')!r}")
        known = {f for f in cls.__dataclass_fields__}
        header = cls(**{k: v for k, v in data.items() if k in known})
        header.columns(path)  # refuse malformed or unknown metadata columns at open
        return header

    def columns(self, path: str) -> tuple[MetadataColumn, ...]:
        """The metadata columns this header describes, checked (``path`` names the store)."""
        if not isinstance(self.metadata_columns, list):
            raise StoreFormatError(path, "the header's metadata_columns is not a list")
        columns = tuple(MetadataColumn.from_json(entry, path) for entry in self.metadata_columns)
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise StoreFormatError(path, f"metadata column names repeat: {names}")
        return columns


@dataclass
class RecordTable:
    """Per-record arrays, aligned with record indices, plus source paths."""

    labels: np.ndarray
    checksums: np.ndarray
    shapes: np.ndarray
    encodings: np.ndarray
    dtypes: np.ndarray
    nbytes: np.ndarray
    paths: list[str]

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAY_DTYPES}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], paths: list[str], count: int, path: str) -> RecordTable:
        typed = {}
        for name, (dtype, tail) in ARRAY_DTYPES.items():
            array = np.asarray(arrays[name]).astype(dtype.lstrip("<"), copy=False)
            if array.shape != (count, *tail):
                raise StoreFormatError(
                    path, f"per-record array {name!r} has shape {array.shape}, expected {(count, *tail)}"
                )
            typed[name] = array
        if len(paths) != count:
            raise StoreFormatError(path, f"{len(paths)} source paths for {count} records")
        return cls(paths=paths, **typed)

    @classmethod
    def empty(cls) -> RecordTable:
        return cls.from_arrays(
            {n: np.zeros((0, *t), d) for n, (d, t) in ARRAY_DTYPES.items()}, [], 0, "<new>"
        )
