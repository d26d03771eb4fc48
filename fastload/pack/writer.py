"""Write one store (or shard) atomically: stream the workers' records into a store writer beside
the target, fsync it, and rename it over the target only when complete. A disk that fills up
(or fails) leaves nothing at the target and says so.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import os
from collections.abc import Sequence

from tqdm import tqdm

from ..errors import PackError, StoreExistsError
from ..sources import Skipped, Source, SourceItem, display_path
from ..stores import FORMATS, StoreHeader, StoreWriter
from ..stores.format import checksum
from ..workers import ordered_map
from .options import PackOptions
from .recorder import Recorder
from .worker import Packed, process_chunk

__all__ = ["write_shard", "source_payload"]


def source_payload(path: str, packed: Packed) -> bytes | Skipped:
    """The payload of ``packed``: its own, or the source file read again and checked."""
    if packed.payload is not None:
        return packed.payload
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return Skipped(path, f"cannot read: {exc.strerror or exc}")
    if checksum(data) != packed.checksum:
        return Skipped(path, "the file changed while it was being packed; re-run to pack it")
    return data


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe_chunk(chunk: Sequence[SourceItem]) -> str:
    first, last = chunk[0].describe(), chunk[-1].describe()
    return first if len(chunk) == 1 else f"the {len(chunk)} files from {first} to {last}"


def write_shard(source: Source, target: str, options: PackOptions, workers: int,
                shard: tuple[int, int], bar: tqdm) -> tuple[Recorder, list[Skipped]]:
    """Pack ``source`` into ``target`` atomically; return the recorder and skipped inputs."""
    if os.path.lexists(target) and not options.overwrite:
        raise StoreExistsError(target)
    directory, name = os.path.split(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.partial-{os.getpid()}")
    _remove_dead_partials(directory, name)
    size_hint = sum(_size(path) for item in source.items for path in item.files)
    writer: StoreWriter = FORMATS[options.format].writer(tmp, size_hint)
    recorder, skipped = Recorder(source.metadata), list(source.skipped)
    try:
        results = ordered_map(process_chunk, source.items, options, workers, describe=_describe_chunk)
        for row, (item, result) in enumerate(zip(source.items, results)):
            bar.update(1)
            payload = result if isinstance(result, Skipped) else source_payload(item.path, result)
            if isinstance(payload, Skipped):
                if options.strict:
                    raise PackError(f"{display_path(payload.path)}: {payload.reason} (strict mode: "
                                    "nothing was written; drop --strict to skip bad inputs)")
                skipped.append(payload)
                continue
            for record in (result, *result.more):  # the other frames of a multi-frame file
                writer.append(payload if record is result else record.payload)
                recorder.add(item, record, options.payload, row)
        if not recorder.labels:
            raise PackError(f"{source.root}: no image could be packed ({len(skipped)} inputs "
                            f"skipped); first reasons: {[s.reason for s in skipped[:3]]}")
        header = _header(source, options, recorder, skipped, shard)
        writer.finish(header, recorder.table(), recorder.metadata_columns())
        _fsync_path(tmp)
        os.replace(tmp, target)
        _fsync_path(directory)
    except BaseException as exc:
        writer.abort()
        for leftover in (tmp, tmp + "-lock"):
            if os.path.lexists(leftover):
                os.remove(leftover)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise PackError(f"disk full while writing {tmp} ({exc.strerror}); nothing was written "
                            f"at {target}: free space or pack elsewhere with -o") from exc
        if _is_lmdb_disk_error(exc):
            raise PackError(f"disk full (or failing) while writing {tmp}: LMDB says {exc}; nothing "
                            f"was written at {target}: free space or pack elsewhere with -o") from exc
        raise
    return recorder, skipped


def _remove_dead_partials(directory: str, name: str) -> None:
    """Delete what packs of this target killed earlier left behind (their process is gone)."""
    prefix = f".{name}.partial-"
    for entry in os.listdir(directory):
        pid = entry[len(prefix):].removesuffix("-lock")
        if not entry.startswith(prefix) or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.remove(os.path.join(directory, entry))
        except OSError:
            pass  # another process cleaned it up first


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _is_lmdb_disk_error(exc: BaseException) -> bool:
    # LMDB turns a short write (ENOSPC, EFBIG) into EIO at commit; all three mean disk full here.
    text = str(exc)
    return type(exc).__module__.startswith("lmdb") and any(
        reason in text for reason in ("No space", "File too large", "Input/output error", "Disk quota"))


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _header(source: Source, options: PackOptions, recorder: Recorder,
            skipped: list[Skipped], shard: tuple[int, int]) -> StoreHeader:
    channels = max(s[2] for s in recorder.shapes)
    return StoreHeader(
        count=len(recorder.labels),
        payload=options.payload,
        classes=list(source.classes),
        encodings=recorder.encoding_names,
        dtypes=recorder.dtype_names,
        channels=channels,
        skipped=[s.to_json() for s in skipped],
        stats=recorder.stats.to_json(),
        source={"root": display_path(os.path.abspath(source.root)), "kind": source.kind},
        shard={"index": shard[0], "count": shard[1]},
        options={"max_side": options.max_side, "quality": options.quality,
                 "max_pixels": options.max_pixels,
                 "dicom": dataclasses.asdict(options.dicom)},
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
