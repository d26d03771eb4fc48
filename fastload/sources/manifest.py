"""CSV manifests (Kaggle style): a column of file names or paths and a column of labels; or,
for multi-channel samples stored one file per channel, several channel columns. Every other
column (a ``patient_id``, a ``site``) is kept as a typed per-record metadata column."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass

import numpy as np

from .base import Skipped, Source, SourceItem

__all__ = ["CsvColumns", "scan_csv", "typed_column"]

PATH_COLUMNS = ("path", "filepath", "file_path", "file", "filename", "file_name", "image",
                "image_path", "image_id", "image_name", "img", "id", "name", "fname")
LABEL_COLUMNS = ("label", "labels", "class", "class_name", "classname", "target", "category", "y")
# Tried, in this order, when a manifest names a file without its extension (e.g. Kaggle ids).
IMPLIED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".tif", ".tiff",
                      ".bmp", ".webp", ".dcm", ".gif")


# Channel columns found without being named: ch1, ch_2, channel3, c4, ... (at least two).
_CHANNEL_COLUMN = re.compile(r"^(?:ch|channel|c)[ _-]?(\d+)$", re.IGNORECASE)
# Metadata cells read as numbers. No leading zeros ("007" is an identifier, kept as text) and
# ASCII digits only; floats also take exponents, "nan" and "inf".
_INT_CELL = re.compile(r"^[+-]?(?:0|[1-9][0-9]*)$")
_FLOAT_CELL = re.compile(r"^[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
                         r"|^[+-]?(?:nan|inf|infinity)$", re.IGNORECASE)
_INT64 = np.iinfo(np.int64)


@dataclass(frozen=True)
class CsvColumns:
    """Which CSV columns hold the path and the label; None means detect from the header.

    ``channels`` names the columns of a multi-channel manifest instead of a path column: each
    row names one single-channel file per column, stacked in this order into one ``HxWxN``
    sample. Without a path column, columns named like ``ch1, ch2, ...`` are found by themselves.

    >>> CsvColumns(channels=["dapi", "gfp", "rfp"], label="label").channels
    ('dapi', 'gfp', 'rfp')
    """

    path: str | None = None
    label: str | None = None
    channels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.channels is None:
            return
        channels = tuple(self.channels)  # a list is fine too; stored as a tuple (frozen, hashable)
        object.__setattr__(self, "channels", channels)
        if not channels:
            raise ValueError("channels must name at least one column")
        if self.path is not None:
            raise ValueError("give either a path column or channel columns, not both")
        if len({c.strip().lower() for c in channels}) != len(channels):
            raise ValueError(f"channel columns are named twice: {list(channels)}")


def _pick(header: list[str], wanted: str | None, candidates: tuple[str, ...], what: str,
          csv_path: str, required: bool) -> int | None:
    lowered = [h.strip().lower() for h in header]
    if wanted is not None:
        if wanted.lower() not in lowered:
            raise ValueError(f"{csv_path}: no column named {wanted!r} for the {what}; columns are {header}")
        return lowered.index(wanted.lower())
    for name in candidates:
        if name in lowered:
            return lowered.index(name)
    if required:
        raise ValueError(
            f"{csv_path}: cannot tell which column holds the {what} (columns: {header}); "
            f"name it with --{what}-column"
        )
    return None


def _resolve(root: str, name: str) -> str | None:
    # normpath: "a.jpg" and "./a.jpg" are one file, and must count as a duplicate.
    path = os.path.normpath(name if os.path.isabs(name) else os.path.join(root, name))
    if os.path.lexists(path):
        return path
    if not os.path.splitext(name)[1]:
        for ext in IMPLIED_EXTENSIONS:
            if os.path.exists(path + ext):
                return path + ext
    return None


def _read_rows(csv_path: str) -> tuple[list[str], list[list[str]]]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        sample = f.read(8192)
        f.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        rows = [row for row in csv.reader(f, dialect) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{csv_path}: the CSV is empty")
    return rows[0], rows[1:]


def _labels_to_ints(raw: list[str]) -> tuple[list[int], list[str]]:
    """Integer labels stay as they are; any other labels become indices into sorted names.

    An empty label cell means unlabelled (-1), as in a Kaggle test manifest.
    """
    given = [v for v in raw if v != ""]
    try:
        ints = {v: int(v) for v in given}
    except ValueError:
        classes = sorted(set(given))
        index = {name: i for i, name in enumerate(classes)}
        return [index[v] if v != "" else -1 for v in raw], classes
    if ints and min(ints.values()) < 0:
        raise ValueError(f"integer labels must be >= 0, found {min(ints.values())}")
    top = max(ints.values()) + 1 if ints else 0
    return [ints[v] if v != "" else -1 for v in raw], [str(i) for i in range(top)]


def _is_header(first: list[str], root: str, columns: CsvColumns) -> bool:
    """A first row is a header unless nothing in it names a known column and its first cell
    names a file that exists (a headerless ``path,label`` manifest)."""
    if columns.path is not None or columns.label is not None or columns.channels is not None:
        return True
    names = {cell.strip().lower() for cell in first}
    if names & set(PATH_COLUMNS) or names & set(LABEL_COLUMNS):
        return True
    return not first or _resolve(root, first[0].strip()) is None


def _file_columns(header: list[str], columns: CsvColumns, csv_path: str) -> list[int]:
    """The column(s) naming each sample's file(s): one path column, or the channel columns."""
    if columns.channels is not None:
        return [_pick(header, name, (), "channel", csv_path, required=True) for name in columns.channels]
    if columns.path is None and not {h.strip().lower() for h in header} & set(PATH_COLUMNS):
        numbered = [(int(m.group(1)), i) for i, h in enumerate(header)
                    if (m := _CHANNEL_COLUMN.match(h.strip()))]
        if len(numbered) >= 2:
            return [i for _, i in sorted(numbered)]
    return [_pick(header, columns.path, PATH_COLUMNS, "path", csv_path, required=True)]


def _resolve_row(root: str, row: list[str], file_cols: list[int], header: list[str],
                 number: int) -> tuple[str, ...] | Skipped:
    """The files one row names, or why the row is skipped."""
    paths = []
    for col in file_cols:
        name = row[col].strip()
        where = f" (column {header[col].strip()!r})" if len(file_cols) > 1 else ""
        path = _resolve(root, name)
        if path is None:
            return Skipped(os.path.join(root, name), f"CSV row {number} names a file that does not exist{where}")
        if os.path.isdir(path):
            return Skipped(path, f"CSV row {number} names a folder, not a file{where}")
        paths.append(path)
    return tuple(paths)


def typed_column(cells: list[str]) -> np.ndarray:
    """A metadata column's cells (stripped strings) as int64, float64 or str.

    Integers (no leading zeros, fitting int64) give int64; with an empty cell among them, or
    any decimal, exponent, ``nan`` or ``inf``, float64 with NaN for empty cells; anything else
    gives strings, ``""`` for empty cells. An all-empty column is strings.

    >>> typed_column(["3", "", "4"]).tolist(), typed_column(["007", "8"]).tolist()
    ([3.0, nan, 4.0], ['007', '8'])
    """
    given = [c for c in cells if c]
    if given and all(_INT_CELL.match(c) for c in given) and len(given) == len(cells):
        values = [int(c) for c in cells]
        if _INT64.min <= min(values) and max(values) <= _INT64.max:
            return np.asarray(values, dtype=np.int64)
        return np.asarray(cells, dtype=str)  # identifiers wider than int64 keep every digit
    if given and all(_FLOAT_CELL.match(c) for c in given):
        return np.asarray([float(c) if c else np.nan for c in cells], dtype=np.float64)
    return np.asarray(cells, dtype=str) if cells else np.zeros(0, dtype=str)


def _metadata_names(header: list[str], used: list[int]) -> dict[int, str]:
    """Column index -> metadata column name, for every column not used for files or labels.
    An unnamed column is named ``column N``; a repeated name gets ``.1``, ``.2``, ..."""
    names: dict[int, str] = {}
    for index, raw in enumerate(header):
        if index in used:
            continue
        base = raw.strip() or f"column {index + 1}"
        name, n = base, 0
        while name in names.values():
            n += 1
            name = f"{base}.{n}"
        names[index] = name
    return names


def _metadata(header: list[str], used: list[int], rows: list[list[str]]) -> dict[str, np.ndarray]:
    # A short (ragged) row has empty cells in the columns it lacks.
    return {name: typed_column([row[i].strip() if i < len(row) else "" for row in rows])
            for i, name in _metadata_names(header, used).items()}


def scan_csv(csv_path: str, root: str, columns: CsvColumns = CsvColumns()) -> Source:
    """List the files a CSV names, relative to ``root``, in the CSV's row order.

    Rows naming a missing file, a folder, or a path listed before are skipped with a reason;
    a path listed twice with different labels is skipped everywhere (its label is unknown).
    Without a label column every sample gets label -1. With channel columns (``columns.channels``,
    or columns named ``ch1, ch2, ...``) each row is one sample made of one file per column.

    Every other column becomes a metadata column (``Source.metadata``, typed by
    ``typed_column`` over the rows kept; a repeated row keeps its first row's values).
    """
    csv_path, root = os.fspath(csv_path), os.fspath(root)
    header, rows = _read_rows(csv_path)
    if _is_header(header, root, columns):
        file_cols = _file_columns(header, columns, csv_path)
        label_col = _pick(header, columns.label, LABEL_COLUMNS, "label", csv_path, required=False)
        first_row = 2
    else:  # headerless: path, then label if there is a second column
        rows, file_cols, label_col, first_row = [header, *rows], [0], 1 if len(header) > 1 else None, 1
        header = [f"column {i + 1}" for i in range(len(header))]
    skipped: list[Skipped] = []
    # resolved file(s) -> (row number, raw label, the row's cells)
    chosen: dict[tuple[str, ...], tuple[int, str, list[str]]] = {}
    conflicts: set[tuple[str, ...]] = set()
    needed = max([*file_cols, label_col if label_col is not None else 0])
    for number, row in enumerate(rows, start=first_row):
        if needed >= len(row):
            skipped.append(Skipped(f"{csv_path}:{number}", "row has too few columns"))
            continue
        label = row[label_col].strip() if label_col is not None else ""
        files = _resolve_row(root, row, file_cols, header, number)
        if isinstance(files, Skipped):
            skipped.append(files)
        elif files in chosen:
            first, first_label, _ = chosen[files]
            if first_label != label:
                conflicts.add(files)
                reason = f"CSV rows {first} and {number} give different labels ({first_label!r}, {label!r})"
                skipped.append(Skipped(files[0], reason))
            else:
                skipped.append(Skipped(files[0], f"CSV row {number} repeats row {first}"))
        else:
            chosen[files] = (number, label, row)
    kept = [(f, lab) for f, (_, lab, _) in chosen.items() if f not in conflicts]
    used = [*file_cols, *([label_col] if label_col is not None else [])]
    metadata = _metadata(header, used, [row for f, (_, _, row) in chosen.items() if f not in conflicts])
    grouped = len(file_cols) > 1

    def item(files: tuple[str, ...], label: int) -> SourceItem:
        return SourceItem(files[0], label, files if grouped else ())

    if label_col is None:
        return Source(root, [item(f, -1) for f, _ in kept], [], skipped, "csv", metadata)
    try:
        labels, classes = _labels_to_ints([lab for _, lab in kept])
    except ValueError as exc:
        raise ValueError(f"{csv_path}: {exc}") from None
    return Source(root, [item(f, lab) for (f, _), lab in zip(kept, labels)], classes, skipped,
                  "csv", metadata)
