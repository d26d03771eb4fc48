"""Statistics (``fastload inspect``) and integrity checks (``fastload verify``)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from .errors import CorruptStoreError
from .pack import PackOptions
from .pack.recorder import Recorder
from .pack.worker import process_chunk
from .sources import CsvColumns, Skipped, scan_csv, scan_folder
from .stores import RecordTable, Store, open_store
from .stores.sharded import merge_stats
from .workers import default_workers, ordered_map

__all__ = ["BadRecord", "inspect_path", "inspect_store", "inspect_folder", "verify_path", "verify_store"]


def _histogram(values: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(Counter(values).items(), key=lambda kv: str(kv[0]))}


def _summary(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}


_KIND = {"i": "int", "f": "float", "b": "bool", "U": "string"}


def _metadata_profile(metadata: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per metadata column: kind, distinct values, missing ones (NaN, ""), range or examples."""
    profile = []
    for name, values in metadata.items():
        kind = _KIND[values.dtype.kind]
        distinct = np.unique(values)
        entry: dict[str, Any] = {"name": name, "kind": kind, "distinct": int(len(distinct))}
        if kind == "float":
            entry["missing"] = int(np.isnan(values).sum())
            distinct = distinct[~np.isnan(distinct)]
        elif kind == "string":
            entry["missing"] = int((values == "").sum())
            distinct = distinct[distinct != ""]
        if kind in ("int", "float") and distinct.size:
            entry.update(min=distinct[0].item(), max=distinct[-1].item())
        elif kind == "string":
            entry["examples"] = distinct[:3].tolist()
        elif kind == "bool":
            entry["true"] = int(values.sum())
        profile.append(entry)
    return profile


def _profile(table: RecordTable, classes: list[str], encodings: list[str], dtypes: list[str],
             stats: dict[str, Any], skipped: list[dict[str, str]]) -> dict[str, Any]:
    labels = table.labels
    per_class = {name: int((labels == i).sum()) for i, name in enumerate(classes)}
    counts = [c for c in per_class.values() if c > 0]
    return {
        "count": int(len(labels)),
        "classes": len(classes),
        "per_class": per_class,
        "unlabelled": int((labels < 0).sum()),
        "imbalance": round(max(counts) / min(counts), 3) if counts else None,
        "bytes": {"total": int(table.nbytes.sum()), **_summary(table.nbytes)},
        "height": _summary(table.shapes[:, 0]),
        "width": _summary(table.shapes[:, 1]),
        "channels": _histogram(table.shapes[:, 2].tolist()),
        "dtype": _histogram(dtypes[i] for i in table.dtypes.tolist()),
        "encoding": _histogram(encodings[i] for i in table.encodings.tolist()),
        "mean": stats.get("mean"),
        "std": stats.get("std"),
        "skipped": len(skipped),
        "skipped_inputs": skipped,
    }


def inspect_store(store: Store) -> dict[str, Any]:
    """Counts per class, imbalance, sizes, channels, bit depth and per-channel mean/std.

    Reads only metadata (the statistics were gathered while packing): instant on any size.
    """
    shards = store.shards
    header = store.header  # a sharded store's holds every shard's encodings, dtypes, skipped inputs, stats
    table = store.table  # a sharded store's codes index the whole store's lists
    profile = _profile(table, header.classes, header.encodings, header.dtypes, merge_stats([header]), header.skipped)
    profile.update(path=[s.path for s in shards] if len(shards) > 1 else store.path,
                   payload=header.payload, format_version=header.format_version,
                   fastload_version=header.fastload_version,
                   metadata=_metadata_profile(store.metadata))
    return profile


def inspect_folder(root: str, labels: str | None = None, columns: CsvColumns = CsvColumns(),
                   workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """The same statistics on a raw folder (or CSV manifest), by decoding every image."""
    listing = scan_csv(labels, root, columns) if labels else scan_folder(root)
    options = PackOptions(workers=workers, progress=progress)
    recorder, skipped = Recorder(), list(listing.skipped)
    results = ordered_map(process_chunk, listing.items, options, workers or default_workers())
    for item, result in tqdm(zip(listing.items, results), total=len(listing.items), unit="img",
                             disable=not progress, desc="inspecting"):
        if isinstance(result, Skipped):
            skipped.append(result)
        else:
            recorder.add(item, result, "encoded")
    profile = _profile(recorder.table(), listing.classes, recorder.encoding_names,
                       recorder.dtype_names, recorder.stats.to_json(), [s.to_json() for s in skipped])
    profile.update(path=root, payload="files", metadata=_metadata_profile(listing.metadata))
    return profile


def inspect_path(path: str, labels: str | None = None, workers: int | None = None,
                 progress: bool = True, columns: CsvColumns = CsvColumns()) -> dict[str, Any]:
    """``inspect_folder`` for a folder, ``inspect_store`` for anything else."""
    if os.path.isdir(path):
        return inspect_folder(path, labels, columns, workers=workers, progress=progress)
    return inspect_store(open_store(path))


@dataclass(frozen=True)
class BadRecord:
    """One record that failed verification, or (``index`` None) a problem of the whole store."""

    store: str
    index: int | None
    source: str | None
    reason: str

    def __str__(self) -> str:
        if self.index is None:
            return f"{self.store}: {self.reason}"
        return f"{self.store}: record {self.index} (from {self.source}): {self.reason}"


def verify_store(store: Store, decode: bool = False, progress: bool = True) -> list[BadRecord]:
    """Check each file's whole structure (every index page, not only those reads meet) and
    every record's checksum (and, with ``decode=True``, that it decodes). Every bad record is
    listed, not only the first.

    Returns the problems found: records by index, problems of a whole store with index None;
    an empty list means the store is intact. Open a damaged store with
    ``open_store(path, strict=False)`` to verify it (or use ``verify_path``).
    """
    bad: list[BadRecord] = []
    for shard in store.shards:
        try:
            shard.table  # noqa: B018 - no record can be checked without the record table
            problems, records = shard.check_structure()
        except CorruptStoreError as exc:
            bad.append(BadRecord(shard.path, None, None, exc.reason))
            continue
        bad += [BadRecord(shard.path, None, None, problem) for problem in problems]
        for index in tqdm(range(len(shard)), unit="rec", disable=not progress, desc="verifying"):
            reason = records.get(index) or shard.verify_record(index)
            if reason is None and decode:
                try:
                    shard.decode(index)
                except Exception as exc:  # any decode failure is what we are looking for
                    reason = f"does not decode: {exc}"
            if reason is not None:
                bad.append(BadRecord(shard.path, index, shard.paths[index], reason))
    return bad


def verify_path(path: str, decode: bool = False, progress: bool = True) -> tuple[int | None, list[BadRecord]]:
    """``verify_store`` on the store at ``path`` (a glob of shards, a list), opened even when
    damaged. Returns the number of records and the problems; a store too damaged to open at all
    gives None and one problem, saying why."""
    try:
        store = open_store(path, strict=False)
    except CorruptStoreError:
        try:  # the strict open fails on the first problem (a truncation, say), the clearest
            open_store(path).close()
        except CorruptStoreError as exc:
            return None, [BadRecord(exc.store, None, None, exc.reason)]
        raise
    with store:
        return len(store), verify_store(store, decode=decode, progress=progress)
