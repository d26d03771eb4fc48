"""How to pack (PackOptions), checked at construction."""

from __future__ import annotations

from dataclasses import dataclass

from ..codecs.base import DEFAULT_MAX_PIXELS
from ..codecs.dicom import DicomOptions
from ..stores import FORMATS

__all__ = ["PackOptions", "PAYLOADS"]

PAYLOADS = ("encoded", "raw")


@dataclass(frozen=True)
class PackOptions:
    """How to pack. Checked at construction.

    Attributes:
        format: "lmdb" or "hdf5".
        payload: "encoded" keeps each file's original bytes; "raw" stores decoded arrays.
        max_side: re-encode images whose longer side exceeds this (None: never re-encode).
        quality: JPEG quality for re-encoded JPEGs (PNG and 16-bit sources re-encode as PNG).
        workers: worker processes (default: every core this process may use).
        strict: fail on the first bad input instead of skipping it.
        overwrite: replace an existing store at the target.
        max_pixels: refuse images whose header claims more pixels than this.
        shard_size: inputs per shard (None: one store); shards are named NAME-00000-of-00004.EXT.
        num_shards, shard_index: write only shard ``shard_index`` of ``num_shards`` (for packing
            on several processes or nodes in parallel).
        progress: show a tqdm progress bar.
        dicom: how DICOM files are packed (frames, windowing, payload); see DicomOptions.
    """

    format: str = "lmdb"
    payload: str = "encoded"
    max_side: int | None = None
    quality: int = 90
    workers: int | None = None
    strict: bool = False
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    shard_size: int | None = None
    num_shards: int | None = None
    shard_index: int | None = None
    progress: bool = True
    dicom: DicomOptions = DicomOptions()

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if self.payload not in PAYLOADS:
            raise ValueError(f"payload must be one of {PAYLOADS}, got {self.payload!r}")
        if self.max_side is not None and self.max_side < 8:
            raise ValueError(f"max_side must be at least 8 pixels, got {self.max_side}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.shard_size is not None and self.shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {self.shard_size}")
        if (self.num_shards is None) != (self.shard_index is None):
            raise ValueError("num_shards and shard_index go together: give both or neither")
        if self.num_shards is not None and self.shard_size is not None:
            raise ValueError("give either shard_size or num_shards/shard_index, not both")
        if self.num_shards is not None and not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index must be in 0..{self.num_shards - 1}, got {self.shard_index}")
        if not isinstance(self.dicom, DicomOptions):
            raise ValueError(f"dicom must be a DicomOptions, got {type(self.dicom).__name__}")
