"""Functions and classes named by ``"module:qualname"``: how work crosses a process boundary
(and sits in a config) without pickling code."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["reference", "resolve"]


def reference(obj: Any) -> str:
    """``"module:qualname"`` of a module-level function or class.

    Raises:
        ValueError: ``obj`` is a lambda or defined inside a function, so no other process
            could import it by name.
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(f"{obj!r} has no importable name; define it at module level so that "
                         "worker processes and configs can import it as 'module:qualname'")
    return f"{module}:{qualname}"


def resolve(ref: str) -> Any:
    """The object ``ref`` (``"module:qualname"``) names, importing its module.

    Raises:
        ValueError: ``ref`` is not of the form ``"module:qualname"``.
        ImportError, AttributeError: the module or the name within it is missing.
    """
    module, sep, qualname = ref.partition(":")
    if not sep or not module or not qualname:
        raise ValueError(f"expected a name of the form 'module:qualname', got {ref!r}")
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target
