"""Cross-validation folds over a store: stratified by label, grouped by a metadata column
(a patient, a plate) so that nothing leaks between folds, seeded, checked, saved as JSON.

The splitting is scikit-learn's (KFold, StratifiedKFold, GroupKFold, StratifiedGroupKFold;
the ``folds`` extra); this module picks the splitter, checks what it returns, reports the class
balance of every fold, and ties saved folds to the store they were made for.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._optional import require
from .errors import FoldsError
from .stores import Store, open_store
from .stores.format import checksum

__all__ = ["FoldBalance", "Folds", "folds", "load_folds", "store_fingerprint"]

FOLDS_FORMAT = "fastload-folds"
FOLDS_VERSION = 1
GROUPS_FROM_ARRAY = "(array)"
UNLABELLED = "(unlabelled)"

StoreLike = Store | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def store_fingerprint(store: Store) -> dict[str, Any]:
    """What identifies a store's records: their count and the xxh3-64 of their checksums."""
    checksums = np.concatenate([s.table.checksums for s in store.shards]).astype("<u8")
    return {"count": int(len(checksums)), "checksums_xxh3_64": f"{checksum(checksums.tobytes()):016x}"}


@dataclass(frozen=True, eq=False)
class FoldBalance:
    """Validation records per class in every fold, against the ideal.

    Attributes:
        classes: column names: the store's classes (and ``"(unlabelled)"`` when some records
            have label -1).
        counts: ``(k, len(classes))`` int64, validation records of each class in each fold.
        ideal: the same shape, float: a class's share of the store times the fold's size (what
            a perfectly stratified fold of that size would hold).
    """

    classes: list[str]
    counts: np.ndarray
    ideal: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Validation records in each fold."""
        return self.counts.sum(axis=1)

    @property
    def deviation(self) -> np.ndarray:
        """``|counts - ideal|`` in records, per fold and class."""
        return np.abs(self.counts - self.ideal)

    @property
    def max_deviation(self) -> float:
        """The largest distance from the ideal, in records, over every fold and class."""
        return float(self.deviation.max()) if self.counts.size else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"classes": self.classes, "counts": self.counts.tolist(),
                "ideal": np.round(self.ideal, 3).tolist(), "max_deviation": round(self.max_deviation, 3)}

    def __str__(self) -> str:
        names = [c[:12] for c in self.classes[:12]]
        width = max([8, *map(len, names)])
        lines = ["fold      size  " + "  ".join(f"{n:>{width}}" for n in names)]
        for f, (size, row) in enumerate(zip(self.sizes, self.counts)):
            lines.append(f"{f:>4}  {size:>8}  " + "  ".join(f"{c:>{width}}" for c in row[:12]))
        if len(self.classes) > 12:
            lines.append(f"  ... and {len(self.classes) - 12} more classes")
        if self.counts.size:
            f, c = np.unravel_index(int(self.deviation.argmax()), self.counts.shape)
            lines.append(f"largest deviation from the ideal: {self.max_deviation:.2f} records "
                         f"(class {self.classes[c]!r} in fold {f}: {self.counts[f, c]} vs "
                         f"{self.ideal[f, c]:.2f})")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class Folds(Sequence[tuple[np.ndarray, np.ndarray]]):
    """``k`` cross-validation folds of one store: ``folds[i]`` is ``(train_idx, val_idx)``,
    sorted int64 record indices; every record is validated in exactly one fold.

    Made by ``fastload.folds``; saved with ``save`` and read back with ``fastload.load_folds``,
    which refuses a store other than the one they were made for.

    Attributes:
        val_fold: ``(count,)`` int64, the fold in which each record is validated.
        k, seed, shuffle, stratify: how they were made.
        groups: the metadata column grouped by, ``"(array)"`` for groups given as an array,
            or None.
        store: the store path(s) they were made from, as given.
        fingerprint: ``store_fingerprint`` of that store.
        balance: validation records per class per fold (see FoldBalance).
    """

    val_fold: np.ndarray
    k: int
    seed: int
    shuffle: bool
    stratify: bool
    groups: str | None
    store: str | list[str]
    fingerprint: dict[str, Any]
    balance: FoldBalance

    def __len__(self) -> int:
        return self.k

    def __getitem__(self, fold: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        if not -self.k <= fold < self.k:
            raise IndexError(f"fold {fold} out of range ({self.k} folds)")
        fold %= self.k
        return np.flatnonzero(self.val_fold != fold), np.flatnonzero(self.val_fold == fold)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return (self[f] for f in range(self.k))

    def __repr__(self) -> str:
        return (f"Folds(k={self.k}, store={self.store!r}, stratify={self.stratify}, "
                f"groups={self.groups!r}, seed={self.seed}, records={len(self.val_fold)})")

    def check(self, store: Store) -> None:
        """Refuse (FoldsError) a store whose records are not those the folds were made for."""
        _check_fingerprint(self.fingerprint, self.store, store)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: how the folds were made, the store's fingerprint, each record's fold."""
        return {"format": FOLDS_FORMAT, "version": FOLDS_VERSION, "store": self.store,
                "fingerprint": self.fingerprint, "k": self.k, "seed": self.seed,
                "shuffle": self.shuffle, "stratify": self.stratify, "groups": self.groups,
                "balance": self.balance.to_json(), "val_fold": self.val_fold.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any], store: Store, source: str = "folds") -> Folds:
        """Folds from ``to_json``'s dict, checked against ``store`` (FoldsError if not its own)."""
        if not isinstance(data, dict) or data.get("format") != FOLDS_FORMAT:
            raise FoldsError(f"{source}: not a fastload folds file (no \"format\": \"{FOLDS_FORMAT}\")")
        if data.get("version") != FOLDS_VERSION:
            raise FoldsError(f"{source}: folds file version {data.get('version')!r}; this fastload "
                             f"reads version {FOLDS_VERSION} (pip install -U fastload)")
        try:
            val_fold = np.asarray(data["val_fold"], dtype=np.int64).reshape(-1)
            k, fingerprint, made_for = int(data["k"]), dict(data["fingerprint"]), data["store"]
            options = (int(data["seed"]), bool(data["shuffle"]), bool(data["stratify"]), data["groups"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FoldsError(f"{source}: a malformed folds file ({type(exc).__name__}: {exc})") from None
        _check_fingerprint(fingerprint, made_for, store)
        if len(val_fold) != len(store) or val_fold.min(initial=0) < 0 or val_fold.max(initial=0) >= k:
            raise FoldsError(f"{source}: its val_fold does not hold one fold in 0..{k - 1} per record")
        return cls(val_fold, k, *options, made_for, fingerprint, _balance(store, val_fold, k))

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the folds to ``path`` as JSON (atomically); returns the path."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
        return path


def load_folds(path: str | os.PathLike[str], store: StoreLike | None = None) -> Folds:
    """Read folds saved by ``Folds.save``, checked against ``store``.

    Args:
        path: the JSON file.
        store: the store they are for (path, glob, list of shards, or an open store); default:
            the store path recorded in the file.

    Raises:
        FoldsError: not a folds file, or the store is not the one the folds were made for.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as exc:
        raise FoldsError(f"{path}: not a JSON folds file ({exc})") from None
    if store is None:
        store = data.get("store") if isinstance(data, dict) else None
        if not store:
            raise FoldsError(f"{path}: names no store; pass the store: load_folds(path, store)")
    with _opened(store) as opened:
        return Folds.from_json(data, opened, source=path)


def folds(store: StoreLike, k: int = 5, *, stratify: bool = True,
          groups: str | Sequence[Any] | np.ndarray | None = None, seed: int = 0,
          shuffle: bool = True) -> Folds:
    """Split a store's records into ``k`` cross-validation folds.

    ``folds[i]`` is ``(train_idx, val_idx)``: sorted int64 record indices to hand to a Loader.
    The splitter is scikit-learn's: KFold, StratifiedKFold (``stratify``), GroupKFold
    (``groups``) or StratifiedGroupKFold (both). Checked after splitting: every record is
    validated in exactly one fold, and no group is validated in two folds.

    Args:
        store: a store path, a glob or list of shards, or an open store.
        k: number of folds, at least 2.
        stratify: keep each class's share in every fold (by ``store.labels``). Every record
            must be labelled (label -1 is refused: pass ``stratify=False``). A class with
            fewer than ``k`` records cannot be in every fold: a UserWarning names it.
        groups: keep the records of a group in one fold: the name of a metadata column (a CSV
            column kept when packing, e.g. ``"patient_id"``) or one value per record. Missing
            values (NaN, ``""``) are refused; there must be at least ``k`` groups.
        seed: the random seed: the same store and arguments give the same folds.
        shuffle: shuffle before splitting (without it, ``seed`` is not used).

    Returns:
        A Folds: a sequence of ``(train_idx, val_idx)``, with ``balance`` (validation records per
        class per fold), ``save(path)``, and what it was made from.

    Raises:
        FoldsError: what was asked cannot be done (unlabelled records with ``stratify``, too few
            records or groups, an unknown column, missing group values).
        MissingExtraError: scikit-learn is not installed (``pip install "fastload[folds]"``).

    >>> folds = fastload.folds("train.lmdb", k=5, groups="patient_id")   # doctest: +SKIP
    >>> train_idx, val_idx = folds[0]                                    # doctest: +SKIP
    """
    _check_options(k, seed)
    with _opened(store) as opened:
        labels = np.asarray(opened.labels, dtype=np.int64)
        group_values, group_name = _group_values(opened, groups)
        if len(labels) < k:
            raise FoldsError(f"{_describe(opened)} has {len(labels)} records: too few for k={k} folds")
        if stratify:
            _check_stratifiable(opened, labels, k)
        val_fold = _split(labels, group_values, k, stratify, seed, shuffle)
        _check_folds(val_fold, group_values, group_name, k)
        return Folds(val_fold, k, seed, shuffle, stratify, group_name, _store_name(store, opened),
                     store_fingerprint(opened), _balance(opened, val_fold, k))


# --- helpers ----------------------------------------------------------------------------------


def _check_fingerprint(expected: dict[str, Any], made_for: Any, store: Store) -> None:
    found = store_fingerprint(store)
    if found != expected:
        raise FoldsError(
            f"these folds were made for {made_for!r} ({expected.get('count')} records, checksums "
            f"{expected.get('checksums_xxh3_64')}), but {_describe(store)} has {found['count']} "
            f"records (checksums {found['checksums_xxh3_64']}): a different or repacked store; "
            "make new folds for it (fastload.folds / fastload split)")


def _check_options(k: int, seed: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer of at least 2, got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in 0..2**32-1, got {seed!r}")


class _opened:
    """An open store for a path (closed on exit), or the caller's own open store (left open)."""

    def __init__(self, store: StoreLike) -> None:
        self.given = store if hasattr(store, "labels") else None
        self.store = self.given if self.given is not None else open_store(store)  # type: ignore[arg-type]

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        if self.given is None:
            self.store.close()


def _describe(store: Store) -> str:
    shards = store.shards
    return f"{store.path!r}" if len(shards) == 1 else f"the {len(shards)} shards from {store.path!r}"


def _store_name(given: StoreLike, store: Store) -> str | list[str]:
    if isinstance(given, (str, os.PathLike)):
        return os.fspath(given)
    if hasattr(given, "labels"):
        shards = store.shards
        return store.path if len(shards) == 1 else [s.path for s in shards]
    return [os.fspath(p) for p in given]  # type: ignore[union-attr]


def _group_values(store: Store, groups: Any) -> tuple[np.ndarray | None, str | None]:
    if groups is None:
        return None, None
    if isinstance(groups, str):
        metadata = store.metadata
        if groups not in metadata:
            raise FoldsError(f"{_describe(store)} has no metadata column {groups!r} to group by; "
                             f"its columns: {list(metadata) or 'none'} (a CSV's extra columns "
                             "are kept when packing with --labels)")
        values, name = metadata[groups], groups
    else:
        values, name = np.asarray(groups), GROUPS_FROM_ARRAY
        if values.ndim != 1 or len(values) != len(store):
            raise FoldsError(f"groups has shape {values.shape}; expected one value per record "
                             f"({len(store)},)")
    missing = np.isnan(values) if values.dtype.kind == "f" else (values == "") if values.dtype.kind == "U" \
        else np.zeros(len(values), bool)
    if missing.any():
        first = np.flatnonzero(missing)[:5].tolist()
        raise FoldsError(f"{int(missing.sum())} records have no group in {name!r} (empty or NaN; "
                         f"records {first}...): give every record a group, or drop groups")
    return values, name


def _check_stratifiable(store: Store, labels: np.ndarray, k: int) -> None:
    unlabelled = int((labels < 0).sum())
    if unlabelled:
        raise FoldsError(f"{_describe(store)} has {unlabelled} unlabelled records (label -1): "
                         "stratified folds need a label for every record; pass stratify=False "
                         "(fastload split --no-stratify)")
    present, counts = np.unique(labels, return_counts=True)
    if counts.max() < k:
        raise FoldsError(f"every class of {_describe(store)} has fewer than k={k} records "
                         f"(at most {counts.max()}): use fewer folds, or stratify=False (--no-stratify)")
    rare = [_class_name(store, c) for c, n in zip(present, counts) if n < k]
    if rare:
        warnings.warn(f"classes {rare[:10]} have fewer than k={k} records: some validation folds "
                      "will hold none of them", UserWarning, stacklevel=3)


def _class_name(store: Store, label: int) -> str:
    return store.classes[label] if 0 <= label < len(store.classes) else str(label)


def _split(labels: np.ndarray, groups: np.ndarray | None, k: int, stratify: bool, seed: int,
           shuffle: bool) -> np.ndarray:
    model_selection = require("sklearn.model_selection", "folds", "Cross-validation folds", package="scikit-learn")
    name = {(False, False): "KFold", (True, False): "StratifiedKFold",
            (False, True): "GroupKFold", (True, True): "StratifiedGroupKFold"}[stratify, groups is not None]
    splitter = getattr(model_selection, name)(k, shuffle=shuffle, random_state=seed if shuffle else None)
    if groups is not None:
        distinct = len(np.unique(groups))
        if distinct < k:
            raise FoldsError(f"{distinct} groups are too few for k={k} folds: every fold needs "
                             "one group at least; use fewer folds")
    val_fold = np.full(len(labels), -1, dtype=np.int64)
    features = np.zeros((len(labels), 1))  # splitters look only at the count
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        for fold, (_, val) in enumerate(splitter.split(features, labels, groups)):
            if (val_fold[val] >= 0).any():
                raise FoldsError(f"{name} validated a record in two folds; please report this")
            val_fold[val] = fold
    return val_fold


def _check_folds(val_fold: np.ndarray, groups: np.ndarray | None, group_name: str | None, k: int) -> None:
    if (val_fold < 0).any():
        raise FoldsError(f"{int((val_fold < 0).sum())} records are in no validation fold; please report this")
    if groups is None:
        return
    _, group_index = np.unique(groups, return_inverse=True)
    pairs = np.unique(np.stack([group_index.ravel(), val_fold]), axis=1)
    if pairs.shape[1] != group_index.max() + 1:
        raise FoldsError(f"a group of {group_name!r} is validated in two folds; please report this")


def _balance(store: Store, val_fold: np.ndarray, k: int) -> FoldBalance:
    labels = np.asarray(store.labels, dtype=np.int64)
    classes = list(store.classes)
    classes += [str(c) for c in range(len(classes), int(labels.max(initial=-1)) + 1)]
    codes = np.where(labels < 0, len(classes), labels)
    if (labels < 0).any():
        classes.append(UNLABELLED)
    counts = np.zeros((k, len(classes)), dtype=np.int64)
    np.add.at(counts, (val_fold, codes), 1)
    share = counts.sum(axis=0) / max(1, len(labels))
    ideal = counts.sum(axis=1, keepdims=True) * share[None, :]
    return FoldBalance(classes, counts, ideal)
