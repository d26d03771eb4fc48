"""Packing to a URL: each shard is packed in a local temporary folder, uploaded, then removed;
``index.json`` goes up last, so a reader never sees a half-written dataset.

Each uploaded shard also gets a small ``NAME.entry.json`` (its index entry): shards packed by
separate processes (``--num-shards/--shard-index``) each upload theirs, and whichever finishes
the set writes the index from them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from ..errors import StoreExistsError
from .remote import INDEX_MAGIC, INDEX_NAME, INDEX_VERSION
from .urls import filesystem, join

__all__ = ["pack_to_url"]


def _file_digest(path: str) -> str:
    import xxhash

    digest = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(local: str) -> dict[str, Any]:
    from . import open_store

    with open_store(local) as store:
        header = json.loads(store.header.to_json())
        labels = store.labels.tolist()
        shapes, nbytes = store.record_shapes().tolist(), store.record_nbytes().tolist()
    # shapes and sizes let a reader plan its pipeline (DALI's buffers) before any shard is fetched
    return {"name": os.path.basename(local), "bytes": os.path.getsize(local), "xxh3_64": _file_digest(local),
            "header": header, "labels": labels, "shapes": shapes, "nbytes": nbytes}


def _upload(fs: Any, local: str, remote: str) -> None:
    fs.put_file(local, remote)


def pack_to_url(source: Any, url: str, options: Any, pack_local: Callable[..., Any],
                shard_paths: Callable[[str, int], list[str]], storage_options: dict[str, Any] | None = None) -> Any:
    """Pack ``source`` to the store at ``url`` (see the module doc); returns the PackSummary with
    the shards' URLs as outputs. ``pack_local(source, path, options)`` packs locally;
    ``shard_paths(name, count)`` names the shards (the packer's naming: this module imports no packer)."""

    url = url.rstrip("/")
    fs = filesystem(url, storage_options)  # before any work: a missing extra fails now
    if options.num_shards is not None:
        count, indices = options.num_shards, [options.shard_index]
    else:
        count = max(1, -(-len(source) // options.shard_size)) if options.shard_size else 1
        indices = list(range(count))
    if fs.exists(join(url, INDEX_NAME)):
        if not options.overwrite:
            raise StoreExistsError(url)
        fs.rm_file(join(url, INDEX_NAME))  # readers see no store, never a mix of old and new shards
    from . import FORMATS

    ext = os.path.splitext(url)[1] or FORMATS[options.format].extension
    stem = os.path.splitext(os.path.basename(url))[0] or "store"
    names = [os.path.basename(p) for p in shard_paths(stem + ext, count)]
    summary = None
    with tempfile.TemporaryDirectory(prefix="fastload-upload-") as tmp:
        for index in indices:
            one = dataclasses.replace(options, shard_size=None, num_shards=count, shard_index=index)
            target = os.path.join(tmp, stem + ext)
            part = pack_local(source, target, one)
            local = part.outputs[0]
            _upload(fs, local, join(url, names[index]))
            reports = []
            for report in part.reports:
                if report and os.path.exists(report):
                    reports.append(join(url, names[index] + ".report.json"))
                    _upload(fs, report, reports[-1])
            part.reports = reports
            entry = json.dumps(_entry(local)).encode()
            fs.pipe_file(join(url, names[index] + ".entry.json"), entry)
            os.remove(local)
            part.outputs = [join(url, names[index])]
            summary = part if summary is None else _merge(summary, part)
    _write_index_if_complete(fs, url, names)
    return summary


def _merge(total: Any, part: Any) -> Any:
    total.outputs += part.outputs
    total.reports += part.reports
    total.packed += part.packed
    total.skipped += part.skipped
    total.bytes_in += part.bytes_in
    total.bytes_out += part.bytes_out
    total.seconds += part.seconds
    return total


def _write_index_if_complete(fs: Any, url: str, names: list[str]) -> bool:
    entries = []
    for name in names:
        try:
            entries.append(json.loads(fs.cat_file(join(url, name + ".entry.json"))))
        except FileNotFoundError:
            return False  # another process still packs this shard: it writes the index
    index = {"magic": INDEX_MAGIC, "version": INDEX_VERSION, "shards": entries}
    fs.pipe_file(join(url, INDEX_NAME), json.dumps(index).encode())
    return True
