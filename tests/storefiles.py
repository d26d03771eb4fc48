"""Damage a packed store on disk the way a bad disk or a stray write would."""

from __future__ import annotations

import fastload


def flip_byte_in_record(store_path: str, index: int) -> None:
    """Invert one byte in the middle of record ``index``'s payload, in place on disk.

    Every copy of the surrounding bytes is hit: LMDB can keep stale copies of a page in its
    free list, and flipping one of those would leave the live record intact.
    """
    store = fastload.open_store(store_path)
    payload = store.read(index)
    store.close()
    middle = len(payload) // 2
    needle = payload[middle : middle + 32]  # entropy-coded bytes: unique to this record
    with open(store_path, "r+b") as f:
        blob = f.read()
        offset = blob.index(needle)
        while offset != -1:
            f.seek(offset)
            f.write(bytes([blob[offset] ^ 0xFF]))
            offset = blob.find(needle, offset + 1)
