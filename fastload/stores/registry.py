"""Store formats as plugins: each declares its name, extensions, how it is recognised and how it
opens, and ``open_store`` and the Loader's source sniffing ask the registry, never a format.

A format recognises a path by what it holds (magic bytes, the files of a folder) or, failing
that, by its name alone: a store whose first bytes were destroyed is still a store, and its own
reader then says what is wrong with it, rather than "not a store". A format may also claim URL
schemes (``"s3"``, ``"gs"``): a path ``scheme://...`` goes to it without touching the local disk
(how a remote store kind plugs in).

>>> from fastload.stores import REGISTRY
>>> sorted(REGISTRY.writable)
['hdf5', 'lmdb']
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..errors import StoreFormatError

if TYPE_CHECKING:
    from .base import StoreWriter
    from .source import RecordSource

__all__ = ["FormatRegistry", "Match", "StoreFormat", "read_head", "url_scheme"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class Match(enum.IntEnum):
    """How surely a format recognises a path (the registry takes the surest, then the first)."""

    NONE = 0
    NAME = 1  # named like one, nothing in it says so: refused with the format's ``misnamed``
    CONTENT = 2  # its bytes or its folder's files say so


@dataclass(frozen=True)
class StoreFormat:
    """One kind of record source.

    Attributes:
        name: what ``--format`` and messages call it (``"lmdb"``).
        extensions: file name endings, lower case; the first is what the packer names new stores.
        recognise: how surely a local path is one of these (reads at most a few pages).
        open: ``open(path, strict=...)`` -> an open record source.
        writer: ``writer(path, size_hint)`` for formats ``fastload pack`` writes; None if read-only.
        schemes: URL schemes it claims (``"s3"``): such paths are never sniffed on the local disk.
        packed: False for data read in place (image files), which ``open_store`` refuses.
        misnamed: why a path recognised by name only is refused (a damaged or foreign file).
    """

    name: str
    extensions: tuple[str, ...]
    recognise: Callable[[str], Match]
    open: Callable[..., RecordSource]
    writer: Callable[[str, int], StoreWriter] | None = None
    schemes: tuple[str, ...] = ()
    packed: bool = True
    misnamed: str = ""

    @property
    def extension(self) -> str:
        """What the packer names a new store of this format."""
        return self.extensions[0] if self.extensions else ""

    def named_like(self, path: str) -> bool:
        return os.fspath(path).lower().endswith(self.extensions) if self.extensions else False


def url_scheme(path: str) -> str | None:
    """``"s3"`` for ``"s3://bucket/x.lmdb"``; None for a local path (``C:\\x`` included)."""
    found = _SCHEME.match(path)
    return found.group(1).lower() if found else None


def read_head(path: str, size: int, offset: int = 0) -> bytes:
    """Up to ``size`` bytes of a file at ``offset`` (b"" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    except OSError:
        return b""


class FormatRegistry:
    """The formats a process knows, by name; ``register`` adds one (a plugin)."""

    def __init__(self) -> None:
        self._formats: dict[str, StoreFormat] = {}
        self._writable: dict[str, StoreFormat] = {}
        self.writable: Mapping[str, StoreFormat] = MappingProxyType(self._writable)

    def register(self, fmt: StoreFormat) -> StoreFormat:
        """Add ``fmt``; a name or URL scheme another format has is refused."""
        if fmt.name in self._formats:
            raise ValueError(f"a store format named {fmt.name!r} is registered already")
        taken = {s for f in self._formats.values() for s in f.schemes} & set(fmt.schemes)
        if taken:
            raise ValueError(f"store format {fmt.name!r} claims URL schemes {sorted(taken)}, claimed already")
        self._formats[fmt.name] = fmt
        if fmt.writer is not None:
            self._writable[fmt.name] = fmt
        return fmt

    def __getitem__(self, name: str) -> StoreFormat:
        try:
            return self._formats[name]
        except KeyError:
            raise KeyError(f"no store format {name!r}; known: {sorted(self._formats)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._formats

    def __iter__(self) -> Iterator[StoreFormat]:
        return iter(list(self._formats.values()))

    def match(self, path: str) -> tuple[StoreFormat | None, Match]:
        """The format that recognises ``path`` most surely, and how surely."""
        scheme = url_scheme(path)
        if scheme is not None:
            claimed = next((f for f in self._formats.values() if scheme in f.schemes), None)
            return claimed, Match.CONTENT if claimed else Match.NONE
        best: tuple[StoreFormat | None, Match] = (None, Match.NONE)
        for fmt in self._formats.values():
            found = fmt.recognise(path)
            if found > best[1]:
                best = (fmt, found)
        return best

    def is_store(self, path: str) -> bool:
        """Whether ``path`` is a packed store (damaged or not), as opposed to anything else."""
        fmt, found = self.match(path)
        return fmt is not None and fmt.packed and found >= Match.NAME

    def identify(self, path: str) -> StoreFormat:
        """The packed format of ``path``; ``StoreFormatError`` saying why it is not a store."""
        fmt, found = self.match(path)
        if found < Match.CONTENT and url_scheme(path) is None and not os.path.lexists(path):
            raise FileNotFoundError(f"{path}: no such store")
        if fmt is None:
            known = ", ".join(f.name for f in self._formats.values() if f.packed)
            raise StoreFormatError(path, f"not a fastload store (no store format recognises it: {known})")
        if not fmt.packed:
            raise StoreFormatError(path, f"{fmt.misnamed}; pack it first: fastload pack --format lmdb PATH "
                                   "(or read the files in place: fastload.Loader(PATH))")
        if found == Match.NAME:
            raise StoreFormatError(path, fmt.misnamed)
        return fmt
