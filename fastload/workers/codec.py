"""Values as JSON plus binary attachments: what the ordered map's messages carry.

No pickle (nothing here can run code on decoding): JSON types as they are; tuples, dicts,
``bytes``, NumPy arrays and scalars as tagged JSON, their bytes as attachments sent raw after
the JSON (never base64); dataclasses of fastload's own as their class's ``"module:qualname"``
and fields, rebuilt only when that class is a fastload dataclass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .names import reference, resolve

__all__ = ["encode", "decode"]

_JSON_SCALARS = (bool, int, float, str)


def encode(value: Any, blobs: list[bytes | memoryview]) -> Any:
    """``value`` as JSON-able data; its byte buffers are appended to ``blobs``."""
    if value is None or type(value) in _JSON_SCALARS:
        return value
    if isinstance(value, np.generic):  # before the subclass check: np.float64 is a float
        return {"$scalar": value.dtype.str, "value": value.item()}
    if isinstance(value, _JSON_SCALARS):  # a subclass (an enum's str): its plain value
        return value
    if isinstance(value, list):
        return [encode(v, blobs) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, blobs) for v in value]}
    if isinstance(value, dict):
        return {"$dict": [[encode(k, blobs), encode(v, blobs)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray)):
        blobs.append(bytes(value))
        return {"$bytes": len(blobs) - 1}
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        blobs.append(memoryview(array).cast("B") if array.size else b"")
        return {"$array": len(blobs) - 1, "dtype": array.dtype.str, "shape": list(array.shape)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$object": reference(type(value)),
                "fields": {f.name: encode(getattr(value, f.name), blobs) for f in dataclasses.fields(value)}}
    raise TypeError(f"a worker message cannot carry {type(value).__name__} values; send JSON types, "
                    "bytes, NumPy arrays or fastload dataclasses")


def decode(data: Any, blobs: list[bytes]) -> Any:
    """The value ``encode`` turned into ``data`` (with the same attachments)."""
    if isinstance(data, list):
        return [decode(v, blobs) for v in data]
    if not isinstance(data, dict):
        return data
    if "$tuple" in data:
        return tuple(decode(v, blobs) for v in data["$tuple"])
    if "$dict" in data:
        return {decode(k, blobs): decode(v, blobs) for k, v in data["$dict"]}
    if "$bytes" in data:
        return blobs[data["$bytes"]]
    if "$scalar" in data:
        return np.dtype(data["$scalar"]).type(data["value"])
    if "$array" in data:
        # A copy, so the array is writable like the sender's (the arrays sent are small).
        return np.frombuffer(blobs[data["$array"]], np.dtype(data["dtype"])).reshape(data["shape"]).copy()
    if "$object" in data:
        return _rebuild(data["$object"], {k: decode(v, blobs) for k, v in data["fields"].items()})
    raise ValueError(f"unknown value in a worker message: {sorted(data)}")


def _rebuild(ref: str, fields: dict[str, Any]) -> Any:
    """The fastload dataclass ``ref`` with ``fields`` set as they were (no ``__init__`` runs,
    so the object is the sender's exactly, frozen or not)."""
    cls = resolve(ref) if ref.partition(".")[0].partition(":")[0] == "fastload" else None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"a worker message names {ref!r}, which is not a fastload dataclass")
    obj = cls.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(obj, name, value)
    return obj
