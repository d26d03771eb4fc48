"""The byte protocol between the Loader's process and its feed workers (no pickle).

Over each worker's stdin: the spec once (a ``fastload.workers`` message: JSON), then requests;
over its stdout, responses. Every request and response is a fixed ``struct`` header: the
per-batch path costs two small reads and writes, no parsing. A request is followed by the
batch's record indices (``int64``); a FAILED response by a ``fastload.workers`` message holding
the error report (``fastload.workers.failures``).
"""

from __future__ import annotations

import struct

__all__ = ["REQUEST", "RESPONSE", "OK", "FAILED", "READY"]

REQUEST = struct.Struct("<IIqqQ")  # slot, count, seq, epoch, slot capacity
RESPONSE = struct.Struct("<IIqQ")  # status, slot, seq, bytes used (OK; else 0)
OK, FAILED, READY = 0, 1, 2
