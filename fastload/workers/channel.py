"""Bytes and messages over a worker's pipes.

A message is a ``u32`` length, that many bytes of JSON, then the attachments the JSON lists
(``"blobs"``: their sizes) raw. The DALI feed's hot path uses only ``read_exact`` and
``write_all`` with its own fixed ``struct`` headers.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .codec import decode, encode

__all__ = ["read_exact", "write_all", "send_message", "read_message"]

_LENGTH = 4


def read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``; None at end of file (the other side is gone)."""
    parts, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send_message(fd: int, value: Any) -> None:
    """Write ``value`` (see ``codec.encode`` for what it may hold) as one message."""
    blobs: list[bytes | memoryview] = []
    body = json.dumps({"value": encode(value, blobs), "blobs": [len(b) for b in blobs]}).encode("utf-8")
    write_all(fd, len(body).to_bytes(_LENGTH, "little") + body)
    for blob in blobs:
        write_all(fd, blob)


def read_message(fd: int) -> tuple[bool, Any]:
    """``(True, value)`` of the next message; ``(False, None)`` at end of file."""
    head = read_exact(fd, _LENGTH)
    body = None if head is None else read_exact(fd, int.from_bytes(head, "little"))
    if body is None:
        return False, None
    message = json.loads(body)
    blobs = []
    for size in message["blobs"]:
        blob = read_exact(fd, size)
        if blob is None:
            return False, None
        blobs.append(blob)
    return True, decode(message["value"], blobs)
