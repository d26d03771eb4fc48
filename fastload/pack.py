"""Parallel packing: list a source, validate every input, write a store, rename it into place.

A pack never leaves a partial store at its target: it writes ``.NAME.partial-PID`` beside the
target, fsyncs it, and renames it over the target only when complete.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from .codecs import dicom, images, jpeg2000
from .codecs.dicom import DicomOptions
from .errors import BadInputError, MissingExtraError, PackError, StoreExistsError
from .parallel import default_workers, ordered_map
from .pixels import by_channel_chunks, max_value
from .sources import CsvColumns, Skipped, Source, SourceItem, display_path, scan_csv, scan_folder
from .stores import FORMATS, MetadataBuilder, RecordTable, StoreHeader, StoreWriter
from .stores.format import checksum

__all__ = ["PackOptions", "PackSummary", "pack", "pack_source", "default_output", "shard_paths"]

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
    max_pixels: int = images.DEFAULT_MAX_PIXELS
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
        return "\n".join(lines)


# --- worker side (module-level: crosses process boundaries) --------------------------------


@dataclass
class _Packed:
    # None when the payload is the source file's bytes: the parent reads them from the page
    # cache, cheaper than pickling them through a pipe, and checks them against ``checksum``.
    payload: bytes | None
    info: images.ImageInfo
    checksum: int
    mean: np.ndarray  # per-channel mean of the decoded image, in [0, 1] units
    sq_mean: np.ndarray  # per-channel mean of squares, in [0, 1] units
    bytes_in: int
    nbytes: int  # payload size
    # Per-record metadata a worker read from the input (e.g. DICOM tags): name -> value.
    metadata: dict[str, Any] = field(default_factory=dict)
    # Further records from the same input, written right after this one (the other frames of a
    # multi-frame DICOM file with DicomOptions(frames="all")).
    more: list[_Packed] = field(default_factory=list)


def _process_chunk(chunk: Sequence[SourceItem], options: PackOptions) -> list[_Packed | Skipped]:
    return [_process_item(item, options) for item in chunk]


def _process_item(item: SourceItem, options: PackOptions) -> _Packed | Skipped:
    """One input's record(s), or why it is skipped. No input of any kind stops a pack: an
    unexpected error while reading one file (a decoder's bug, a file no check foresaw) skips
    that file with the error's type and message."""
    try:
        return _process_channels(item, options) if item.channel_paths else _process(item.path, options)
    except MissingExtraError as exc:
        return Skipped(item.path, str(exc))
    except Exception as exc:
        kind = type(exc).__qualname__ if type(exc).__module__ == "builtins" else \
            f"{type(exc).__module__}.{type(exc).__qualname__}"
        return Skipped(item.path, f"unexpected {kind} while reading it: {exc}")


def _read(path: str) -> bytes | Skipped:
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        return Skipped(path, "is a folder, not a file")
    except OSError as exc:
        return Skipped(path, f"cannot read: {exc.strerror or exc}")


def _process(path: str, options: PackOptions) -> _Packed | Skipped:
    data = _read(path)
    if isinstance(data, Skipped):
        return data
    try:
        if images.sniff_format(data) == "dicom":
            return _process_dicom(data, path, options)
        info, image = images.validate(data, path, options.max_pixels)
        return _packed(data, info, image, options, len(data))
    except BadInputError as exc:
        return Skipped(path, exc.reason)


def _process_dicom(data: bytes, path: str, options: PackOptions) -> _Packed:
    """The DICOM file's record(s) by the policy (fastload.codecs.dicom): the first frame, or one
    record per frame; each stored as the policy's pixels, or as its kept JPEG 2000 codestream."""
    records = []
    for number, frame in enumerate(dicom.read_frames(data, path, options.dicom, options.max_pixels)):
        image = frame.image
        info = images.ImageInfo("dicom", image.shape[0], image.shape[1], image.shape[2],
                                str(image.dtype), frame.meta["photometric"])
        payload = _kept_codestream(frame, path)
        if payload is not None:
            info = dataclasses.replace(info, format="jpeg2000")
        record = _packed(payload, info, image, options, len(data) if number == 0 else 0,
                         from_file=False)
        record.metadata = dicom.record_metadata(frame.meta)
        records.append(record)
    first = records[0]
    first.more = records[1:]
    return first


def _kept_codestream(frame: dicom.DicomFrame, path: str) -> bytes | None:
    """The frame's JPEG 2000 codestream in a JP2 file with the policy, if it decodes back to
    exactly the policy's pixels (checked here, so a reader never meets a surprise); else None,
    and the record keeps the pixels (the reason is recorded in its metadata)."""
    if frame.codestream is None or frame.policy is None:
        return None
    extra = dicom.policy_json(frame.policy, frame.meta)
    payload = jpeg2000.wrap(frame.codestream, extra)
    try:
        again = jpeg2000.decode(payload, path)
    except BadInputError as exc:
        frame.meta["codestream_refused"] = exc.reason
        return None
    if again.shape != frame.image.shape or again.dtype != frame.image.dtype or not np.array_equal(again, frame.image):
        frame.meta["codestream_refused"] = "its decode differs from pydicom's pixels"
        return None
    return payload


def _packed(data: bytes, info: images.ImageInfo, image: np.ndarray, options: PackOptions,
            bytes_in: int, from_file: bool = True) -> _Packed:
    """The record for decoded ``image``; ``from_file``: ``data`` is the source file's bytes
    (not sent back: the parent rereads them)."""
    payload, info, image = _transform(data, info, image, options)
    mean, sq_mean = _moments(image)
    return _Packed(None if from_file and payload is data else payload, info, checksum(payload),
                   mean, sq_mean, bytes_in, len(payload))


def _process_channels(item: SourceItem, options: PackOptions) -> _Packed | Skipped:
    """Stack one single-channel file per channel into an HxWxN sample, stored as .npy bytes
    (the files have no one encoded form to keep; .npy is lossless and decodes by content)."""
    planes: list[np.ndarray] = []
    bytes_in = 0
    for number, path in enumerate(item.channel_paths, start=1):
        data = _read(path)
        if isinstance(data, Skipped):
            return data
        try:
            _, plane = images.validate(data, path, options.max_pixels)
        except BadInputError as exc:
            return Skipped(path, f"channel {number} of {item.describe()}: {exc.reason}")
        problem = _channel_mismatch(plane, planes[0] if planes else None, item.channel_paths[0])
        if problem:
            return Skipped(path, f"channel {number} ({display_path(path)}) {problem}")
        planes.append(plane)
        bytes_in += len(data)
    stacked = np.concatenate(planes, axis=2)
    height, width, channels = stacked.shape
    info = images.ImageInfo("npy", height, width, channels, str(stacked.dtype), "HWC")
    try:
        return _packed(images.encode_npy(stacked), info, stacked, options, bytes_in, from_file=False)
    except BadInputError as exc:
        return Skipped(item.path, exc.reason)


def _channel_mismatch(plane: np.ndarray, first: np.ndarray | None, first_path: str) -> str | None:
    """Why ``plane`` cannot be stacked with the sample's first channel, or None."""
    if plane.shape[2] != 1:
        return f"has {plane.shape[2]} channels; a channel file must hold one (grayscale) channel"
    if first is None or (plane.shape, plane.dtype) == (first.shape, first.dtype):
        return None
    return (f"is {plane.shape[1]}x{plane.shape[0]} {plane.dtype}, but channel 1 "
            f"({display_path(first_path)}) is {first.shape[1]}x{first.shape[0]} {first.dtype}; "
            "every channel of a sample must have the same size and dtype")


def _source_payload(path: str, packed: _Packed) -> bytes | Skipped:
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


def _transform(data: bytes | None, info: images.ImageInfo, image: np.ndarray,
               options: PackOptions) -> tuple[bytes, images.ImageInfo, np.ndarray]:
    """The record's payload: ``data`` (None: no encoded form yet, as for a DICOM frame), or the
    image resized (``max_side``) and re-encoded losslessly where it is not an 8-bit JPEG, or
    the raw array."""
    if options.max_side is not None and max(info.height, info.width) > options.max_side:
        scale = options.max_side / max(info.height, info.width)
        size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
        image = _resize(image, size)
        info = dataclasses.replace(info, height=image.shape[0], width=image.shape[1])
        data = None
    if options.payload == "raw":
        return np.ascontiguousarray(image, dtype=image.dtype.newbyteorder("<")).tobytes(), info, image
    if data is None:
        fmt = _reencode_format(info.format, image)
        data = _encode(image, fmt, options.quality)
        info = dataclasses.replace(info, format=fmt, channels=image.shape[2])
    return data, info, image


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized (area averaging) at its own pixel type; 32-bit integers (DICOM), which
    OpenCV cannot resize, go through float64 (exact for them) and are rounded back."""
    resize = partial(cv2.resize, dsize=size, interpolation=cv2.INTER_AREA)
    if image.dtype in (np.int32, np.uint32):
        return np.rint(by_channel_chunks(image.astype(np.float64), resize)).astype(image.dtype)
    return by_channel_chunks(image, resize)


def _reencode_format(source_format: str, image: np.ndarray) -> str:
    """JPEG for 8-bit JPEG sources, PNG for other gray/RGB 8/16-bit images (16 bits kept),
    .npy for the rest (any channel count, int16 and float pixels), which PNG cannot hold."""
    if image.shape[2] not in (1, 3) or image.dtype not in (np.uint8, np.uint16):
        return "npy"
    return "jpeg" if source_format == "jpeg" and image.dtype == np.uint8 else "png"


def _encode(image: np.ndarray, fmt: str, quality: int) -> bytes:
    if fmt == "npy":
        return images.encode_npy(image)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[2] == 3 else image
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise BadInputError("<re-encode>", f"OpenCV could not re-encode as {fmt}")
    return buf.tobytes()


_STATS_ROWS = 64


def _moments(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Every k-th row (at most ~64 rows): dataset statistics for normalisation need no more,
    # and the full image would cost a fifth of the decode.
    scale = max_value(image.dtype)
    rows = image[:: max(1, image.shape[0] // _STATS_ROWS)]
    # OpenCV takes at most 4 channels at a time, and is far faster than NumPy here.
    parts = [cv2.meanStdDev(np.ascontiguousarray(rows[:, :, c : c + 4]))
             for c in range(0, rows.shape[2], 4)]
    mean = np.concatenate([m.ravel() for m, _ in parts]) / scale
    std = np.concatenate([s.ravel() for _, s in parts]) / scale
    return mean, std**2 + mean**2


# --- parent side ---------------------------------------------------------------------------


def default_output(source: str, fmt: str) -> str:
    """``data/`` -> ``data.lmdb`` (beside the folder), by the format's extension."""
    return os.path.normpath(os.path.abspath(source)) + FORMATS[fmt].extension


def shard_paths(output: str, num_shards: int) -> list[str]:
    """``train.lmdb`` in 4 shards -> ``train-00000-of-00004.lmdb``, ...``-00003-of-00004.lmdb``."""
    if num_shards == 1:
        return [output]
    stem, ext = os.path.splitext(output)
    return [f"{stem}-{i:05d}-of-{num_shards:05d}{ext}" for i in range(num_shards)]


class _Stats:
    """Dataset-level per-channel moments, accumulated in record order (deterministic)."""

    def __init__(self) -> None:
        self.pixels = 0
        self.sums: np.ndarray | None = None
        self.sq_sums: np.ndarray | None = None
        self.mixed = False

    def add(self, packed: _Packed) -> None:
        n = packed.info.height * packed.info.width
        if self.sums is not None and len(packed.mean) not in (1, len(self.sums)) and len(self.sums) != 1:
            self.mixed = True  # e.g. RGB and 6-channel records: per-channel statistics mean nothing
            return
        if self.sums is None or len(self.sums) < len(packed.mean):
            # Grayscale counts towards every channel of a colour dataset (as the loader expands it).
            self.sums = np.broadcast_to(self.sums if self.sums is not None else 0.0, packed.mean.shape).copy()
            self.sq_sums = np.broadcast_to(self.sq_sums if self.sq_sums is not None else 0.0, packed.mean.shape).copy()
        self.sums += packed.mean * n
        self.sq_sums += packed.sq_mean * n
        self.pixels += n

    def to_json(self) -> dict[str, Any]:
        if not self.pixels or self.mixed:
            return {}
        mean = self.sums / self.pixels
        std = np.sqrt(np.maximum(self.sq_sums / self.pixels - mean**2, 0.0))
        return {"pixels": self.pixels, "mean": mean.round(6).tolist(), "std": std.round(6).tolist(),
                "units": "fraction of the dtype's maximum (0..1)"}


class _Recorder:
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
        self.stats = _Stats()
        self.metadata = MetadataBuilder(kinds=dicom.METADATA_KINDS)
        self.dicom_records = 0
        self.bytes_in = 0
        self.bytes_out = 0

    @staticmethod
    def _code(names: list[str], name: str) -> int:
        if name not in names:
            names.append(name)
        return names.index(name)

    def add(self, item: SourceItem, packed: _Packed, payload_kind: str, row: int = -1) -> None:
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
        self.stats.add(packed)
        self.bytes_in += packed.bytes_in
        self.bytes_out += packed.nbytes

    def metadata_columns(self) -> dict[str, np.ndarray]:
        """The source's metadata for the records packed, then the values workers read (the DICOM
        ones only when a DICOM record was packed)."""
        rows = np.asarray(self.rows, dtype=np.int64)
        if self.source_metadata and rows.size and rows.min() < 0:
            raise ValueError("_Recorder.add needs each record's row when the source has metadata")
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


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe_chunk(chunk: Sequence[SourceItem]) -> str:
    first, last = chunk[0].describe(), chunk[-1].describe()
    return first if len(chunk) == 1 else f"the {len(chunk)} files from {first} to {last}"


def _write_shard(source: Source, target: str, options: PackOptions, workers: int,
                 shard: tuple[int, int], bar: tqdm) -> tuple[_Recorder, list[Skipped]]:
    """Pack ``source`` into ``target`` atomically; return the recorder and skipped inputs."""
    if os.path.lexists(target) and not options.overwrite:
        raise StoreExistsError(target)
    directory, name = os.path.split(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.partial-{os.getpid()}")
    _remove_dead_partials(directory, name)
    size_hint = sum(_size(path) for item in source.items for path in item.files)
    writer: StoreWriter = FORMATS[options.format].writer(tmp, size_hint)
    recorder, skipped = _Recorder(source.metadata), list(source.skipped)
    try:
        results = ordered_map(_process_chunk, source.items, options, workers, describe=_describe_chunk)
        for row, (item, result) in enumerate(zip(source.items, results)):
            bar.update(1)
            payload = result if isinstance(result, Skipped) else _source_payload(item.path, result)
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


def _header(source: Source, options: PackOptions, recorder: _Recorder,
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


def _write_report(target: str, recorder: _Recorder, skipped: list[Skipped]) -> str:
    report = target + ".report.json"
    body = {"store": display_path(target), "packed": len(recorder.labels),
            "skipped": [s.to_json() for s in skipped]}
    tmp = report + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=1, ensure_ascii=False)
    os.replace(tmp, report)
    return report


def pack_source(source: Source, output: str, options: PackOptions = PackOptions()) -> PackSummary:
    """Pack an already-listed Source into one store or a set of shards at ``output``."""
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
            recorder, skipped = _write_shard(part, targets[index], options, workers, (index, count), bar)
            summary.outputs.append(targets[index])
            summary.reports.append(_write_report(targets[index], recorder, skipped))
            summary.packed += len(recorder.labels)
            summary.skipped += skipped
            summary.bytes_in += recorder.bytes_in
            summary.bytes_out += recorder.bytes_out
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

