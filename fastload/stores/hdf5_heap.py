"""Variable-length strings of an HDF5 store (its header attribute, its source paths), read
without HDF5.

HDF5 keeps such strings in "global heap collections", the one structure of its 1.10+ format
without a checksum, and trusts them: a zeroed collection makes HDF5 2.0 loop forever (an
object of size 0 never advances its parser), a flipped string length makes it allocate and
clear gigabytes. So fastload finds the 16-byte references itself (in the root group's object
header, in the ``paths`` dataset's contiguous storage) and reads the collections with bounds
checks. Layouts other than what fastload writes (superblock 2/3, object header 2, attribute
message 3, contiguous ``paths``) are left to h5py: ``None`` from these functions.

References: the HDF5 File Format Specification 3.0, sections II.A (superblock), IV.A.1.b
(version 2 object headers), IV.A.2.m (attribute message), III.E (global heap).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from .fileio import ReadOnlyFile, ShortReadError

__all__ = ["GlobalHeap", "VLEN_REF", "is_vlen_string", "root_attribute"]

VLEN_REF = np.dtype([("length", "<u4"), ("address", "<u8"), ("index", "<u4")])  # on disk
_ATTRIBUTE, _CONTINUATION = 0x0C, 0x10
_MAX_HEADER_CHUNK = 1 << 20
_MAX_CHUNKS = 64


def root_attribute(raw: ReadOnlyFile, name: bytes) -> tuple[bytes, bytes] | None:
    """(datatype, data) of the root group's attribute ``name``, read from its object header;
    None for layouts fastload does not write (then h5py reads it). The object header's
    checksum was checked by HDF5 when it opened the file."""
    try:
        head = raw.read(0, 44)
    except ShortReadError:
        return None
    if head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] not in (2, 3) or head[9:11] != b"\x08\x08":
        return None
    if struct.unpack_from("<Q", head, 12)[0] != 0:  # base address: a user block precedes the file
        return None
    (root,) = struct.unpack_from("<Q", head, 36)
    for kind, body in _messages(raw, root):
        if kind == _ATTRIBUTE:
            found = _attribute(body, name)
            if found is not None:
                return found
    return None


def _messages(raw: ReadOnlyFile, address: int) -> list[tuple[int, bytes]]:
    """The (type, body) messages of the version 2 object header at ``address``."""
    try:
        head = raw.read(address, 16)
    except ShortReadError:
        return []
    if head[:5] != b"OHDR\x02":
        return []
    flags = head[5]
    at = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
    width = 1 << (flags & 3)
    try:
        prefix = raw.read(address, at + width)
    except ShortReadError:
        return []
    size = int.from_bytes(prefix[at : at + width], "little")
    chunks = [(address + at + width, size)]
    found: list[tuple[int, bytes]] = []
    while chunks and len(chunks) <= _MAX_CHUNKS:
        start, size = chunks.pop(0)
        if size > _MAX_HEADER_CHUNK or start + size > raw.size:
            return found
        block = raw.read(start, size)
        at = 0
        while at + 4 <= len(block):
            kind, length = block[at], int.from_bytes(block[at + 1 : at + 3], "little")
            at += 4 + (2 if flags & 0x04 else 0)
            body = block[at : at + length]
            at += length
            if kind == _CONTINUATION and len(body) == 16:
                where, span = struct.unpack("<QQ", body)
                chunks.append((where + 4, span - 8))  # past "OCHK", before the checksum
            found.append((kind, body))
    return found


def _attribute(body: bytes, name: bytes) -> tuple[bytes, bytes] | None:
    """(datatype, data) of a version 3 attribute message named ``name``, else None."""
    if len(body) < 9 or body[0] != 3 or body[1] & 0x03:  # version 3, nothing shared
        return None
    name_size, type_size, space_size = struct.unpack_from("<HHH", body, 2)
    at = 9
    if body[at : at + name_size].rstrip(b"\0") != name:
        return None
    at += name_size
    datatype = body[at : at + type_size]
    return datatype, body[at + type_size + space_size :]


def is_vlen_string(datatype: bytes) -> bool:
    """A variable-length string datatype (class 9, type 1)."""
    return len(datatype) >= 8 and datatype[0] & 0x0F == 9 and datatype[1] & 0x0F == 1


_OBJECT = struct.Struct("<HH4xQ")  # index, reference count, reserved, size


class GlobalHeap:
    """Objects of the global heap collections of one file, each collection parsed once."""

    def __init__(self, raw: ReadOnlyFile, damage: Callable[[str], Exception]) -> None:
        self.raw = raw
        self.damage = damage
        self._collections: dict[int, tuple[bytes, np.ndarray, np.ndarray]] = {}

    def collection(self, address: int) -> tuple[bytes, np.ndarray, np.ndarray]:
        """The bytes of the collection at ``address``, and where each object starts and its
        size, by object index (size -1: no such object)."""
        if address not in self._collections:
            self._collections[address] = self._parse(address)
        return self._collections[address]

    def _parse(self, address: int) -> tuple[bytes, np.ndarray, np.ndarray]:
        where = f"the global heap collection at byte {address:,}"
        if not 0 < address < self.raw.size - 16:
            raise self.damage(f"{where} lies outside the file")
        head = self.raw.read(address, 16)
        (size,) = struct.unpack_from("<Q", head, 8)
        if head[:5] != b"GCOL\x01" or not 16 < size <= self.raw.size - address:
            raise self.damage(f"{where} is damaged (signature {head[:4]!r}, {size:,} bytes)")
        block = self.raw.read(address, size)
        found: list[int] = []
        spans: list[int] = []  # start, size, start, size, ...
        at, unpack = 16, _OBJECT.unpack_from
        while at + 16 <= size:
            index, _, length = unpack(block, at)
            if index == 0:  # the free space: the rest of the collection
                break
            if length > size - at - 16:
                raise self.damage(f"{where} is damaged (object {index} at byte {at})")
            found.append(index)
            spans += (at + 16, length)
            at += 16 + (length + 7) // 8 * 8
        starts, sizes = np.zeros(1 << 16, np.int64), np.full(1 << 16, -1, np.int64)
        if found:
            indices = np.array(found, np.int64)
            if len(np.unique(indices)) != len(indices):
                raise self.damage(f"{where} is damaged (an object index appears twice)")
            pairs = np.array(spans, np.int64).reshape(-1, 2)
            starts[indices], sizes[indices] = pairs[:, 0], pairs[:, 1]
        return block, starts, sizes

    def strings(self, refs: np.ndarray) -> list[bytes]:
        """The byte strings of ``refs`` (VLEN_REF records), each checked against its object."""
        out: list[bytes] = [b""] * len(refs)
        used = refs["length"] > 0
        for address in np.unique(refs["address"][used]).tolist():
            block, starts, sizes = self.collection(address)
            mine = np.flatnonzero(used & (refs["address"] == address))
            index, length = refs["index"][mine].astype(np.int64), refs["length"][mine].astype(np.int64)
            wrong = np.flatnonzero(sizes[index] != length)
            if len(wrong):
                raise self.damage(f"string {index[wrong[0]]} of the global heap collection at byte "
                                  f"{address:,} is damaged or missing ({length[wrong[0]]:,} bytes referenced)")
            for i, start, n in zip(mine.tolist(), starts[index].tolist(), length.tolist()):
                out[i] = block[start : start + n]
        return out
