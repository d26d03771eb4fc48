"""A pack run: list the source, write each shard, write each shard's report, sum up."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from ..errors import PackError, StoreExistsError
from ..sources import CsvColumns, Skipped, Source, display_path, scan_csv, scan_folder
from ..stores import FORMATS
from ..stores.urls import is_url
from ..workers import default_workers
from .options import PackOptions
from .recorder import Recorder
from .writer import write_shard

__all__ = ["PackSummary", "pack", "pack_source", "default_output", "shard_paths"]


@dataclass
class PackSummary:
    """What a pack did; ``str()`` gives the line the CLI prints."""

    outputs: list[str]
    packed: int
    skipped: list[Skipped]
    bytes_in: int
    bytes_out: int
    seconds: float
    reports: list[str] = field(default_factory=list)
    slow_decodes: int = 0  # records stored as 16-bit PNG (Recorder.slow_decodes)
    raw_bytes: int = 0  # what those would take stored decoded

    @property
    def images_per_second(self) -> float:
        return self.packed / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        lines = [
            f"packed {self.packed} images, skipped {len(self.skipped)}, "
            f"{self.bytes_in / 1e6:.1f} MB in -> {self.bytes_out / 1e6:.1f} MB stored, "
            f"{self.seconds:.2f} s, {self.images_per_second:.0f} images/s",
            *(f"  wrote {p}" for p in self.outputs),
        ]
        if self.skipped:
            lines.append(f"  skipped inputs and reasons: {', '.join(self.reports)}")
            lines += [f"    {display_path(s.path)}: {s.reason}" for s in self.skipped[:10]]
            if len(self.skipped) > 10:
                lines.append(f"    ... and {len(self.skipped) - 10} more")
        if self.slow_decodes:  # the one payload whose decode bounds the reading rate (README: 16-bit images)
            lines.append(f"  note: {self.slow_decodes} records are 16-bit PNGs, whose decode (zlib) limits every "
                         f"loader reading them; --store raw ({self.raw_bytes / 1e6:.1f} MB for them) reads them "
                         "without a decode, several times faster")
        return "\n".join(lines)


def default_output(source: str, fmt: str) -> str:
    """``data/`` -> ``data.lmdb`` (beside the folder), by the format's extension."""
    return os.path.normpath(os.path.abspath(source)) + FORMATS[fmt].extension


def shard_paths(output: str, num_shards: int) -> list[str]:
    """``train.lmdb`` in 4 shards -> ``train-00000-of-00004.lmdb``, ...``-00003-of-00004.lmdb``."""
    if num_shards == 1:
        return [output]
    stem, ext = os.path.splitext(output)
    return [f"{stem}-{i:05d}-of-{num_shards:05d}{ext}" for i in range(num_shards)]


def _write_report(target: str, recorder: Recorder, skipped: list[Skipped]) -> str:
    """``TARGET.report.json``: what was packed and every skipped input with its reason."""
    report = target + ".report.json"
    body = {"store": display_path(target), "packed": len(recorder.labels),
            "skipped": [s.to_json() for s in skipped]}
    tmp = report + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=1, ensure_ascii=False)
    os.replace(tmp, report)
    return report


def pack_source(source: Source, output: str, options: PackOptions = PackOptions()) -> PackSummary:
    """Pack an already-listed Source into one store or a set of shards at ``output`` (a path,
    or a URL: packed locally shard by shard and uploaded, the index last: fastload.stores.upload)."""
    if is_url(output):  # never a local path: "s3://b/x.lmdb" must not make a folder named "s3:"
        from ..stores.upload import pack_to_url

        return pack_to_url(source, output, options, pack_source, shard_paths)
    start = time.perf_counter()
    workers = options.workers or default_workers()
    if options.num_shards is not None:
        count, indices = options.num_shards, [options.shard_index]
    elif options.shard_size is not None:
        count = max(1, -(-len(source) // options.shard_size))
        indices = list(range(count))
    else:
        count, indices = 1, [0]
    targets = shard_paths(output, count)
    for index in indices:
        if os.path.lexists(targets[index]) and not options.overwrite:
            raise StoreExistsError(targets[index])
    total = sum(len(source.split(count, i)) for i in indices)
    summary = PackSummary([], 0, [], 0, 0, 0.0)
    with tqdm(total=total, unit="img", disable=not options.progress, desc="packing") as bar:
        for index in indices:
            part = source.split(count, index)
            recorder, skipped = write_shard(part, targets[index], options, workers, (index, count), bar)
            summary.outputs.append(targets[index])
            summary.reports.append(_write_report(targets[index], recorder, skipped))
            summary.packed += len(recorder.labels)
            summary.skipped += skipped
            summary.bytes_in += recorder.bytes_in
            summary.bytes_out += recorder.bytes_out
            slow, raw_bytes = recorder.slow_decodes()
            summary.slow_decodes += slow
            summary.raw_bytes += raw_bytes
    summary.seconds = time.perf_counter() - start
    return summary


def pack(source: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
         labels: str | os.PathLike[str] | None = None, columns: CsvColumns = CsvColumns(),
         options: PackOptions = PackOptions()) -> PackSummary:
    """Pack a folder of images (class sub-folders, or a CSV of paths and labels) into a store.

    Args:
        source: the image folder (CSV paths are relative to it).
        output: the store path; default: the folder's name plus ``.lmdb`` or ``.h5`` beside it.
        labels: a CSV manifest with a path column (or one column per channel file of a
            multi-channel sample) and, optionally, a label column.
        columns: which CSV columns to use (default: detected from the header).
        options: format, payload, workers, strictness, sharding; see PackOptions.

    Returns:
        A PackSummary; skipped inputs are also in the store's header and ``OUTPUT.report.json``.

    Raises:
        StoreExistsError: the target exists and ``options.overwrite`` is False.
        PackError: strict mode met a bad input, nothing was packable, or the disk filled up.
    """
    source = os.fspath(source)
    listing = scan_csv(os.fspath(labels), source, columns) if labels else scan_folder(source)
    if not listing.items:
        raise PackError(f"{source}: found no files to pack" + (
            f" ({len(listing.skipped)} entries skipped: {listing.skipped[0].reason}...)" if listing.skipped else ""))
    if options.strict and listing.skipped:
        first = listing.skipped[0]
        raise PackError(f"{display_path(first.path)}: {first.reason} (strict mode: nothing was written)")
    target = os.fspath(output) if output is not None else default_output(source, options.format)
    return pack_source(listing, target, options)
