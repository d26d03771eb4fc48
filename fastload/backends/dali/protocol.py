"""The byte protocol between the Loader's process and its feed workers (no pickle).

Over each worker's stdin: the spec once (``u32`` length + JSON), then requests; over its stdout,
responses. Every message is a fixed ``struct`` header, plus the batch's record indices
(``int64``) after a request and a JSON error report after a failed response.
"""

from __future__ import annotations

import importlib
import json
import os
import struct
import traceback
from typing import Any

from ...errors import FastloadError

__all__ = ["REQUEST", "RESPONSE", "OK", "FAILED", "READY", "FeedWorkerError", "read_exact",
           "write_all", "error_report", "rebuild_error"]

REQUEST = struct.Struct("<IIqqQ")  # slot, count, seq, epoch, slot capacity
RESPONSE = struct.Struct("<IIqQ")  # status, slot, seq, bytes used (OK) or report length (FAILED)
OK, FAILED, READY = 0, 1, 2


class FeedWorkerError(FastloadError, RuntimeError):
    """A feed worker failed with an error that is not one of fastload's own."""


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


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def error_report(exc: BaseException) -> bytes:
    """An exception as JSON: its class, message, plain attributes and traceback."""
    fields = {k: v for k, v in vars(exc).items()
              if not k.startswith("_") and isinstance(v, (str, int, float, bool, type(None)))}
    return json.dumps({
        "module": type(exc).__module__, "name": type(exc).__qualname__, "message": str(exc),
        "fields": fields, "traceback": traceback.format_exc(),
    }).encode("utf-8")


def rebuild_error(report: bytes, where: str) -> FastloadError:
    """The worker's exception again, when it is one of fastload's; else a FeedWorkerError that
    carries its type, message and traceback. ``where`` names the worker and the batch."""
    data = json.loads(report)
    cls: Any = None
    if str(data.get("module", "")).partition(".")[0] == "fastload":
        try:
            cls = importlib.import_module(data["module"])
            for part in str(data["name"]).split("."):
                cls = getattr(cls, part)
        except (ImportError, AttributeError):
            cls = None
    if isinstance(cls, type) and issubclass(cls, FastloadError):
        exc = cls.__new__(cls)
        Exception.__init__(exc, data["message"])
        exc.__dict__.update(data.get("fields", {}))
        return exc
    return FeedWorkerError(f"{where} failed: {data.get('name')}: {data.get('message')}\n"
                           f"{data.get('traceback', '')}")
