"""The per-record table of a store being written: labels, checksums, shapes, encodings, dtypes,
sizes, paths, metadata columns and statistics, collected in record order."""

from __future__ import annotations

import numpy as np

from ..codecs import dicom
from ..errors import PackError
from ..sources import SourceItem
from ..stores import MetadataBuilder, RecordTable
from .stats import Stats
from .worker import Packed

__all__ = ["Recorder"]


class Recorder:
    """Collects the per-record table while payloads stream into a writer.

    ``source_metadata``: the source's metadata columns (aligned with its items); ``add`` is
    told each record's item position, so skipped items leave no gap or shift.
    """

    def __init__(self, source_metadata: dict[str, np.ndarray] | None = None) -> None:
        self.source_metadata = source_metadata or {}
        self.rows: list[int] = []  # position in the source's items of each record
        self.labels: list[int] = []
        self.checksums: list[int] = []
        self.shapes: list[tuple[int, int, int]] = []
        self.encodings: list[int] = []
        self.dtypes: list[int] = []
        self.nbytes: list[int] = []
        self.paths: list[str] = []
        self.encoding_names: list[str] = []
        self.dtype_names: list[str] = []
        self.stats = Stats()
        self.metadata = MetadataBuilder(kinds=dicom.METADATA_KINDS)
        self.dicom_records = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @staticmethod
    def _code(names: list[str], name: str) -> int:
        if name not in names:
            names.append(name)
        return names.index(name)

    def add(self, item: SourceItem, packed: Packed, payload_kind: str, row: int = -1) -> None:
        info = packed.info
        self.rows.append(row)
        self.labels.append(item.label)
        self.checksums.append(packed.checksum)
        self.shapes.append((info.height, info.width, info.channels))
        self.encodings.append(self._code(self.encoding_names, "raw" if payload_kind == "raw" else info.format))
        self.dtypes.append(self._code(self.dtype_names, info.dtype))
        self.nbytes.append(packed.nbytes)
        frames = packed.metadata.get("dicom_frames") or 1
        frame = f" [frame {int(packed.metadata['dicom_frame'])}]" if frames > 1 else ""
        self.paths.append(item.describe() + frame)
        self.metadata.append(packed.metadata)
        self.dicom_records += "dicom_frame" in packed.metadata
        self.stats.add(packed.mean, packed.sq_mean, info.height * info.width)
        self.bytes_in += packed.bytes_in
        self.bytes_out += packed.nbytes

    def metadata_columns(self) -> dict[str, np.ndarray]:
        """The source's metadata for the records packed, then the values workers read (the DICOM
        ones only when a DICOM record was packed)."""
        rows = np.asarray(self.rows, dtype=np.int64)
        if self.source_metadata and rows.size and rows.min() < 0:
            raise ValueError("Recorder.add needs each record's row when the source has metadata")
        columns = {name: values[rows] for name, values in self.source_metadata.items()}
        worker_columns = self.metadata.columns()
        if not self.dicom_records:
            worker_columns = {k: v for k, v in worker_columns.items() if k not in dicom.METADATA_KINDS}
        for name, values in worker_columns.items():
            if name in columns:
                raise PackError(f"metadata column {name!r} comes both from the manifest and from "
                                "the files; rename the manifest's column")
            columns[name] = values
        return columns

    def slow_decodes(self) -> tuple[int, int]:
        """The records stored as 16-bit PNG, and the bytes they would take decoded (``--store
        raw``): their inflate (zlib, ~5 ms a 512 px image on one core with any decoder) is what
        reading them costs, whatever the loader does after it."""
        png16 = [(h, w, c) for (h, w, c), encoding, dtype in zip(self.shapes, self.encodings, self.dtypes)
                 if self.encoding_names[encoding] == "png" and self.dtype_names[dtype] == "uint16"]
        return len(png16), sum(2 * h * w * c for h, w, c in png16)

    def table(self) -> RecordTable:
        n = len(self.labels)
        return RecordTable.from_arrays({
            "labels": np.asarray(self.labels, dtype=np.int64),
            "checksums": np.asarray(self.checksums, dtype=np.uint64),
            "shapes": np.asarray(self.shapes, dtype=np.uint32).reshape(n, 3),
            "encodings": np.asarray(self.encodings, dtype=np.uint8),
            "dtypes": np.asarray(self.dtypes, dtype=np.uint8),
            "nbytes": np.asarray(self.nbytes, dtype=np.uint64),
        }, self.paths, n, "<new>")
