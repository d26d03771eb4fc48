"""What a source hands to the packer: labelled file paths, class names, and what it refused."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SourceItem", "Skipped", "Source", "display_path"]


def display_path(path: str) -> str:
    """A printable, JSON-safe form of a path (non-UTF-8 bytes become backslash escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class SourceItem:
    """One input to pack: a file on disk and its integer label (-1 when unlabelled).

    A sample made of one single-channel file per channel (a CSV with channel columns) lists
    them in ``channel_paths``, in channel order; ``path`` is then the first of them.
    """

    path: str
    label: int
    channel_paths: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """Every file this sample is read from."""
        return self.channel_paths or (self.path,)

    def describe(self) -> str:
        """A printable name for the sample: its file, or its channel files joined by ' + '."""
        return " + ".join(display_path(p) for p in self.files)


@dataclass(frozen=True)
class Skipped:
    """One input that was not packed, and why."""

    path: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"path": display_path(self.path), "reason": self.reason}


@dataclass
class Source:
    """A listing ready to pack: items in record order, class names, inputs refused while listing.

    ``metadata``: per-item metadata columns, name -> typed array aligned with ``items`` (a
    CSV's extra columns); the packer keeps the values of the items it packs.
    """

    root: str
    items: list[SourceItem]
    classes: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    kind: str = "folder"
    metadata: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, values in self.metadata.items():
            if len(values) != len(self.items):
                raise ValueError(f"metadata column {name!r} has {len(values)} values for "
                                 f"{len(self.items)} items")

    def __len__(self) -> int:
        return len(self.items)

    def split(self, num_shards: int, index: int) -> Source:
        """The contiguous part ``index`` of ``num_shards``: shards concatenate to the whole."""
        if not 0 <= index < num_shards:
            raise ValueError(f"shard index {index} is outside 0..{num_shards - 1}")
        n = len(self.items)
        lo, hi = n * index // num_shards, n * (index + 1) // num_shards
        skipped = self.skipped if index == 0 else []
        metadata = {name: values[lo:hi] for name, values in self.metadata.items()}
        return Source(self.root, self.items[lo:hi], self.classes, skipped, self.kind, metadata)
