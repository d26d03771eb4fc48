"""The one way an exception travels from a worker process to its parent: as JSON.

The report holds the exception's type (``"module:qualname"``), message, plain attributes and
traceback. The parent rebuilds fastload's errors as their own class with their fields, and
Python's built-in exceptions as their class with the message; anything else (a library's
error) becomes a WorkerError that carries its type, message and traceback. No pickle, and no
parsing of messages.
"""

from __future__ import annotations

import builtins
import traceback
from typing import Any

from ..errors import FastloadError, WorkerError
from .names import resolve

__all__ = ["error_report", "rebuild_error"]

_PLAIN = (str, int, float, bool, type(None))


def error_report(exc: BaseException) -> dict[str, Any]:
    """``exc`` as JSON-able data: type, message, plain attributes and traceback."""
    return {
        "type": f"{type(exc).__module__}:{type(exc).__qualname__}",
        "message": str(exc),
        "fields": {k: v for k, v in vars(exc).items() if not k.startswith("_") and isinstance(v, _PLAIN)},
        "traceback": "".join(traceback.format_exception(exc)),
    }


def rebuild_error(report: dict[str, Any], where: str) -> Exception:
    """The worker's exception again (see the module's docstring); ``where`` names the worker
    and what it was doing, for the note that carries the worker's traceback."""
    module, _, name = str(report.get("type", "")).partition(":")
    message = str(report.get("message", ""))
    exc = _rebuilt(module, name, message, report.get("fields") or {})
    if exc is None:
        return WorkerError(f"{where} failed: {name}: {message}\n{report.get('traceback', '')}")
    exc.add_note(f"raised in {where}; its traceback there:\n{report.get('traceback', '')}")
    return exc


def _rebuilt(module: str, name: str, message: str, fields: dict[str, Any]) -> Exception | None:
    if module == "builtins":
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                return cls(message)
            except Exception:  # a class that needs more than a message (UnicodeDecodeError)
                return None
        return None
    if module.partition(".")[0] != "fastload":
        return None
    try:
        cls = resolve(f"{module}:{name}")
    except (ImportError, AttributeError):
        return None
    if not (isinstance(cls, type) and issubclass(cls, FastloadError)):
        return None
    exc = cls.__new__(cls)  # not __init__: it would compose a message from arguments not sent
    Exception.__init__(exc, message)
    exc.__dict__.update(fields)
    return exc
