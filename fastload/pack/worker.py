"""The per-input worker: read one input (an image, a DICOM file, or one file per channel),
validate and decode it, and turn it into its record(s). Module-level: runs in the pack's worker
processes, which import only this side of packing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codecs import dicom, images, jpeg2000
from ..errors import BadInputError, MissingExtraError
from ..sources import Skipped, SourceItem, display_path
from ..stores.format import checksum
from .options import PackOptions
from .payload import transform
from .stats import moments

__all__ = ["Packed", "process_chunk", "process_item", "process"]


@dataclass
class Packed:
    """One record as a worker made it: its payload, header facts, checksum and statistics."""

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
    more: list[Packed] = field(default_factory=list)


def process_chunk(chunk: Sequence[SourceItem], options: PackOptions) -> list[Packed | Skipped]:
    """The records of a chunk of inputs, in order (what ``ordered_map`` runs in each worker)."""
    return [process_item(item, options) for item in chunk]


def process_item(item: SourceItem, options: PackOptions) -> Packed | Skipped:
    """One input's record(s), or why it is skipped. No input of any kind stops a pack: an
    unexpected error while reading one file (a decoder's bug, a file no check foresaw) skips
    that file with the error's type and message."""
    try:
        return _process_channels(item, options) if item.channel_paths else process(item.path, options)
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


def process(path: str, options: PackOptions) -> Packed | Skipped:
    """The record(s) of the file at ``path``, or why it is skipped."""
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


def _process_dicom(data: bytes, path: str, options: PackOptions) -> Packed:
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
            bytes_in: int, from_file: bool = True) -> Packed:
    """The record for decoded ``image``; ``from_file``: ``data`` is the source file's bytes
    (not sent back: the parent rereads them)."""
    payload, info, image = transform(data, info, image, options)
    mean, sq_mean = moments(image)
    return Packed(None if from_file and payload is data else payload, info, checksum(payload),
                   mean, sq_mean, bytes_in, len(payload))


def _process_channels(item: SourceItem, options: PackOptions) -> Packed | Skipped:
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
