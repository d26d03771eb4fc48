"""Image files read in place, with the store interface: new data without a packing step.

``FileStore`` lists a folder (class sub-folders give labels, a flat folder none), a glob, a list
of files, or a folder plus a CSV, in a fixed order, and reads each file's header once (format,
size after EXIF orientation, channels, bit depth). Files that are not readable images are left
out and listed in ``skipped`` with their reason; the Loader warns about them once. Records are
read straight from the files (no checksums: there are none to check).
"""

from __future__ import annotations

import glob as globbing
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codecs import images
from ..codecs.base import Window
from ..errors import BadInputError
from ..sources.base import Skipped, Source, display_path
from .format import StoreHeader
from .registry import Match, StoreFormat, read_head
from .source import RecordSource

__all__ = ["FORMAT", "FileReader", "FileStore", "FileTable"]

_HEAD_BYTES = 1 << 18  # enough for the headers of nearly every image; else the whole file is read
_EXIF_SWAPS = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees


@dataclass
class FileTable:
    """Per-file arrays, aligned with record indices (the subset of RecordTable readers use)."""

    labels: np.ndarray
    shapes: np.ndarray
    nbytes: np.ndarray
    paths: list[str]


@dataclass
class _Probe:
    shape: tuple[int, int, int]
    dtype: str
    format: str


def _orientation_swaps(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(0x0112, 1)) in _EXIF_SWAPS
    except Exception:  # no readable EXIF: the decoder keeps the stored orientation too
        return False


def _probe(path: str) -> _Probe:
    if not os.path.isfile(path):
        raise BadInputError(path, "not a file")
    with open(path, "rb") as f:
        data = f.read(_HEAD_BYTES)
        try:
            info = images.probe(data, display_path(path))
        except BadInputError:
            data += f.read()  # a header past the first bytes (large EXIF): read it all
            info = images.probe(data, display_path(path))
    height, width = info.height, info.width
    if info.format == "jpeg" and _orientation_swaps(data):
        height, width = width, height
    return _Probe((height, width, info.channels), info.dtype, info.format)


def _list(source: Any, labels_csv: str | None) -> Source:
    from ..sources import CsvColumns, scan_csv, scan_folder

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if labels_csv is not None:
            return scan_csv(labels_csv, path, CsvColumns())
        if os.path.isdir(path):
            return scan_folder(path)
        if globbing.has_magic(path):
            found = sorted(p for p in globbing.glob(path, recursive=True) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f"{path}: no file matches this pattern")
            return _flat(os.path.dirname(path.split("*")[0]) or ".", found)
        return _flat(os.path.dirname(path) or ".", [path])
    return _flat(os.path.commonpath([os.path.abspath(os.fspath(p)) for p in source]) if source else ".",
                 [os.fspath(p) for p in source])


def _flat(root: str, paths: Sequence[str]) -> Source:
    from ..sources.base import SourceItem

    return Source(root, [SourceItem(p, -1) for p in paths], [], [], "files")


def _key(path: str, root: str) -> str:
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    except ValueError:  # another drive (Windows)
        rel = path
    return display_path(path if rel.startswith("..") else rel)


class FileReader(RecordSource):
    """Image files read in place by record index: what a feed worker needs of a FileStore
    (its files, in record order; nothing is probed again).

    Args:
        files: the image files, one per record.
        shapes: each file's height, width, channels after the decode policy, when known.
    """

    def __init__(self, files: Sequence[str], shapes: np.ndarray | None = None) -> None:
        self._files = tuple(files)
        self.path = display_path(os.path.commonpath([os.path.abspath(p) for p in self._files])) if files else "."
        self.header = StoreHeader(count=len(self._files), payload="encoded", classes=[], encodings=[],
                                  dtypes=[], channels=3)
        self._table = FileTable(labels=np.full(len(self._files), -1, np.int64),
                                shapes=np.zeros((len(self._files), 3), np.int64) if shapes is None
                                else np.asarray(shapes, np.int64).reshape(-1, 3),
                                nbytes=np.full(len(self._files), -1, np.int64),
                                paths=[display_path(p) for p in self._files])

    @property
    def table(self) -> FileTable:
        return self._table

    @property
    def files(self) -> tuple[str, ...]:
        return self._files

    def read(self, index: int, verify: bool = True) -> bytes:
        """The bytes of file ``index`` (``verify`` is ignored: files carry no checksum)."""
        with open(self._files[index], "rb") as f:
            return f.read()

    def decode(self, index: int, window: Window | None = None, *, into: np.ndarray | None = None,
               verify: bool = True) -> np.ndarray:
        """File ``index`` decoded (its ``window`` only, if given); an error names its path."""
        return images.decode(self.read(index, verify), path=display_path(self._files[index]), window=window, into=into)

    def too_large(self, index: int, size: int, room: int) -> Exception:
        return BadInputError(self._files[index], f"is {size:,} bytes now, more than when the loader opened it: "
                             "it changed since; open the loader again")


class FileStore(FileReader):
    """Image files as a read-only record source (see the module docstring).

    Args:
        source: a folder, a glob (``"test/*.jpg"``), a list of files, or a folder with ``labels``.
        labels_csv: a CSV naming the files (and labels) of ``source``, as ``fastload pack --labels``.

    Attributes:
        keys: each record's name: its path relative to the folder (or as given).
        skipped: files left out, with the reason.
    """

    def __init__(self, source: Any, labels_csv: str | None = None) -> None:
        self.source, self.labels_csv = source, labels_csv
        listing = _list(source, labels_csv)
        self.root = listing.root
        self.skipped: list[Skipped] = list(listing.skipped)
        kept, probes, labels = [], [], []
        for item in listing.items:
            try:
                probes.append(_probe(item.path))
            except (BadInputError, OSError) as exc:
                self.skipped.append(Skipped(item.path, getattr(exc, "reason", None) or str(exc)))
                continue
            kept.append(item.path)
            labels.append(item.label)
        if not kept:
            raise FileNotFoundError(f"{display_path(self.root)}: no readable image among {len(listing.items)} "
                                    f"files; first reasons: {[s.reason for s in self.skipped[:3]]}")
        self._files = tuple(kept)
        self.keys: list[str] = [_key(p, self.root) for p in kept]
        self.path = display_path(self.root)
        formats = sorted({p.format for p in probes})
        dtypes = sorted({p.dtype for p in probes})
        self._table = FileTable(
            labels=np.asarray(labels, np.int64),
            shapes=np.asarray([p.shape for p in probes], np.int64).reshape(-1, 3),
            nbytes=np.asarray([os.path.getsize(p) for p in kept], np.int64),
            paths=[display_path(p) for p in kept])
        self.header = StoreHeader(count=len(kept), payload="encoded", classes=list(listing.classes), encodings=formats,
                                  dtypes=dtypes, channels=int(self._table.shapes[:, 2].max()))

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # plain lists and arrays: crosses to DataLoader workers

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"FileStore({self.path!r}, {len(self)} files, {len(self.skipped)} skipped)"


def recognise(path: str) -> Match:
    """A folder (of image files, when no store format claims it), or one image file."""
    if os.path.isdir(path):
        return Match.CONTENT
    return Match.CONTENT if images.sniff_format(read_head(path, 64)) is not None else Match.NONE


def open_files(path: str, *, strict: bool = True) -> FileStore:
    """The image files of ``path`` read in place (``strict`` is for stores: files have no index)."""
    return FileStore(path)


FORMAT = StoreFormat(name="files", extensions=(), recognise=recognise, open=open_files, packed=False,
                     misnamed="is a folder or an image file, not a store")
