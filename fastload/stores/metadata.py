"""Per-record metadata columns: named, typed arrays aligned with a store's records.

A column is a number (int64, float64, float32), a boolean, or a string per record: a CSV's
``patient_id``, a DICOM tag. Numbers and booleans are stored as plain little-endian arrays;
strings as int32 codes into the sorted list of the column's distinct values (compact for the
repeated values metadata usually holds, and no pickle). docs/FORMAT.md has the on-disk layout.

Writers take a mapping ``name -> array`` (``StoreWriter.finish(..., metadata=...)``);
``MetadataBuilder`` collects such columns one record at a time. Readers give them back through
``StoreReader.metadata`` (the same arrays: int64, float64/float32, bool, or NumPy ``str``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import StoreFormatError

__all__ = ["KINDS", "MetadataColumn", "EncodedColumn", "MetadataBuilder", "as_column",
           "encode_metadata", "decode_column"]

# kind -> on-disk dtypes it may use (the first is the default); strings store int32 codes.
KINDS: dict[str, tuple[str, ...]] = {
    "int": ("<i8",),
    "float": ("<f8", "<f4"),
    "bool": ("|b1",),
    "string": ("<i4",),
}
_ENCODING = {"int": "plain", "float": "plain", "bool": "plain", "string": "categorical"}
_INT64 = np.iinfo(np.int64)


@dataclass(frozen=True)
class MetadataColumn:
    """What the header says about one column: its name, kind, on-disk dtype and encoding.

    Attributes:
        name: the column's name (any non-empty string; stored in the header, not in keys).
        kind: ``"int"``, ``"float"``, ``"bool"`` or ``"string"``.
        dtype: the stored array's dtype: ``"<i8"``, ``"<f8"``/``"<f4"``, ``"|b1"``, or
            ``"<i4"`` (the codes of a string column).
        encoding: ``"plain"`` (the values themselves) or ``"categorical"`` (codes into a list
            of the distinct values, sorted; strings only).
    """

    name: str
    kind: str
    dtype: str
    encoding: str

    @property
    def numpy_dtype(self) -> np.dtype:
        """The dtype of the array ``StoreReader.metadata`` returns for this column."""
        return np.dtype(str) if self.kind == "string" else np.dtype(self.dtype).newbyteorder("=")

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, path: str) -> MetadataColumn:
        if not isinstance(data, dict) or not {"name", "kind", "dtype", "encoding"} <= data.keys():
            raise StoreFormatError(path, f"a metadata column entry in the header is malformed: {data!r}")
        column = cls(*(data[k] for k in ("name", "kind", "dtype", "encoding")))
        if not isinstance(column.name, str) or not column.name:
            raise StoreFormatError(path, f"a metadata column has no valid name: {data!r}")
        if column.kind not in KINDS or column.dtype not in KINDS[column.kind] \
                or column.encoding != _ENCODING[column.kind]:
            raise StoreFormatError(
                path, f"metadata column {column.name!r} has kind {column.kind!r}, dtype "
                f"{column.dtype!r}, encoding {column.encoding!r}, which this fastload does not "
                "read (corrupt, or written by a newer fastload: pip install -U fastload)")
        return column


@dataclass(frozen=True)
class EncodedColumn:
    """One column as written: its header entry, the stored array, and a string column's values."""

    column: MetadataColumn
    stored: np.ndarray
    values: list[str] | None = None


def as_column(name: str, values: Any, count: int | None = None) -> np.ndarray:
    """``values`` as a column array: int64, float64, float32, bool, or NumPy ``str``.

    Any integer dtype becomes int64 (refused if a value does not fit), float16 becomes
    float32, bytes and Python strings become ``str``; object arrays must hold only strings.

    Raises:
        ValueError: the name is empty, the length is not ``count``, or the dtype is not one of
            the above (complex, datetime, objects that are not strings, more than one axis).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a metadata column needs a non-empty string name, got {name!r}")
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"metadata column {name!r} must be one value per record (1-D), "
                         f"got shape {array.shape}")
    if count is not None and len(array) != count:
        raise ValueError(f"metadata column {name!r} has {len(array)} values for {count} records")
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.bool_, copy=False)
    if kind in "iu":
        if array.size and kind == "u" and array.max() > _INT64.max:
            raise ValueError(f"metadata column {name!r} holds integers beyond int64")
        return array.astype(np.int64, copy=False)
    if kind == "f":
        return array.astype(np.float64 if array.dtype.itemsize > 4 else np.float32, copy=False)
    if kind == "U":
        return array
    if kind == "S":
        return np.char.decode(array, "utf-8")
    if kind == "O" and all(isinstance(v, str) for v in array.tolist()):
        return array.astype(str) if array.size else np.zeros(0, dtype=str)
    raise ValueError(f"metadata column {name!r} has dtype {array.dtype}; columns hold integers, "
                     "floats, booleans or strings")


def _describe(name: str, array: np.ndarray) -> MetadataColumn:
    kind = {"i": "int", "f": "float", "b": "bool", "U": "string"}[array.dtype.kind]
    dtype = "<f4" if array.dtype == np.float32 else KINDS[kind][0]
    return MetadataColumn(name, kind, dtype, _ENCODING[kind])


def encode_metadata(metadata: Mapping[str, Any] | None, count: int) -> list[EncodedColumn]:
    """Each column of ``metadata`` (name -> values, one per record) as it is written."""
    encoded = []
    for name, values in (metadata or {}).items():
        array = as_column(name, values, count)
        column = _describe(name, array)
        if column.kind == "string":
            distinct, codes = np.unique(array, return_inverse=True)
            encoded.append(EncodedColumn(column, codes.astype(column.dtype), distinct.tolist()))
        else:
            encoded.append(EncodedColumn(column, np.ascontiguousarray(array, dtype=column.dtype)))
    return encoded


def decode_column(column: MetadataColumn, stored: np.ndarray, values: list[str] | None,
                  count: int, path: str) -> np.ndarray:
    """The column's values from its stored array (and a string column's distinct values)."""
    stored = np.asarray(stored)
    if stored.shape != (count,):
        raise StoreFormatError(path, f"metadata column {column.name!r} has shape {stored.shape}, "
                               f"expected {(count,)}")
    stored = stored.astype(column.dtype, copy=False)
    if column.kind != "string":
        return stored.astype(column.numpy_dtype, copy=False)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise StoreFormatError(path, f"metadata column {column.name!r} lacks its list of values")
    if count and (stored.min() < 0 or stored.max() >= len(values)):
        raise StoreFormatError(path, f"metadata column {column.name!r} has codes outside its "
                               f"{len(values)} values (corrupt store)")
    return np.asarray(values, dtype=str)[stored] if values else np.zeros(count, dtype=str)


# --- collecting values one record at a time ------------------------------------------------

_MISSING = object()


class MetadataBuilder:
    """Collects metadata one record at a time, in record order; types each column at the end.

    A column the caller names in ``kinds`` gets that kind (give kinds for values that
    several processes or shards produce, so that every shard types them alike). Other columns
    are typed from their values: all integers -> int64; numbers -> float64; all booleans ->
    bool; anything else -> strings (``str(value)``). A record without a value (not in its
    mapping, or None) holds NaN in a float column and ``""`` in a string column; an integer or
    boolean column with a missing value becomes float64 when inferred, and is refused when
    its kind was given.

    >>> builder = MetadataBuilder(kinds={"thickness": "float"})
    >>> builder.append({"patient": "P1", "thickness": 1.25})
    >>> builder.append({"patient": "P2"})
    >>> columns = builder.columns()
    >>> columns["patient"].tolist(), columns["thickness"].tolist()
    (['P1', 'P2'], [1.25, nan])
    """

    def __init__(self, kinds: Mapping[str, str] | None = None) -> None:
        self.kinds = dict(kinds or {})
        for name, kind in self.kinds.items():
            if kind not in KINDS:
                raise ValueError(f"metadata column {name!r}: kind must be one of {sorted(KINDS)}, "
                                 f"got {kind!r}")
        self._values: dict[str, list[Any]] = {name: [] for name in self.kinds}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, values: Mapping[str, Any]) -> None:
        """Add the next record's values (a name missing from ``values`` is a missing value)."""
        for name, value in values.items():
            column = self._values.get(name)
            if column is None:
                as_column(name, [])  # checks the name
                column = self._values[name] = [_MISSING] * self._count
            column.append(_MISSING if value is None else value)
        self._count += 1
        for column in self._values.values():
            if len(column) < self._count:
                column.append(_MISSING)

    def columns(self) -> dict[str, np.ndarray]:
        """Every column, typed, aligned with the records appended (in first-seen order)."""
        return {name: self._typed(name, values) for name, values in self._values.items()}

    def _typed(self, name: str, values: list[Any]) -> np.ndarray:
        kind = self.kinds.get(name) or _infer_kind(values)
        missing = [i for i, v in enumerate(values) if v is _MISSING]
        if missing and kind in ("int", "bool"):
            if name in self.kinds:
                raise ValueError(f"metadata column {name!r} (kind {kind!r}) has no value for record "
                                 f"{missing[0]}; use kind 'float' (NaN) or 'string' ('') for "
                                 "columns with missing values")
            kind = "float"
        try:
            if kind == "string":
                return np.asarray(["" if v is _MISSING else str(v) for v in values], dtype=str)
            if kind == "float":
                return np.asarray([math.nan if v is _MISSING else float(v) for v in values],
                                  dtype=np.float64)
            if kind == "bool":
                return np.asarray([_as_bool(v) for v in values], dtype=np.bool_)
            return np.asarray([_as_int(v) for v in values], dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"metadata column {name!r} (kind {kind!r}): {exc}") from None


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _as_bool(v: Any) -> bool:
    if not _is_bool(v):
        raise TypeError(f"{v!r} is not a boolean")
    return bool(v)


def _as_int(v: Any) -> int:
    if _is_bool(v) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{v!r} is not an integer")
    return int(v)


def _infer_kind(values: list[Any]) -> str:
    present = [v for v in values if v is not _MISSING]
    if present and all(_is_bool(v) for v in present):
        return "bool"
    if present and all(isinstance(v, numbers.Integral) and not _is_bool(v) for v in present):
        if all(_INT64.min <= int(v) <= _INT64.max for v in present):
            return "int"
        return "string"  # identifiers wider than int64 keep every digit as text
    if present and all(isinstance(v, numbers.Real) and not _is_bool(v) for v in present):
        return "float"
    return "string"
