"""The label audit: records whose loss stays high across epochs, for a person to review.

A Loader built with ``loss_sampling=`` keeps each record's per-epoch mean loss (see
fastload.loss_sampling). ``loader.audit("audit.csv")`` ranks the records by how persistently
their loss stays high (their mean percentile across the epochs kept: 1.0 = the highest loss of
every epoch) and writes one row per record with its path, label and class: a record the model
keeps getting wrong while it learns its neighbours is often mislabelled.

The history can be saved (``loader.save_loss_history("losses.npz")``, a NumPy archive read with
``allow_pickle=False``) and audited later, away from training: ``fastload audit losses.npz``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .loss_sampling import persistence

__all__ = ["describe_records", "audit_rows", "write_audit_csv", "save_loss_history", "load_loss_history",
           "audit_history_file"]

_COLUMNS = ["rank", "record", "persistence", "mean_loss", "last_loss", "epochs_seen", "label", "class", "path"]


def describe_records(store: Any, indices: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
    """Path, label, class name and metadata of store records (the indices ``return_index`` yields)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    labels = np.asarray(store.labels)
    classes = list(store.classes)
    paths = list(getattr(store, "paths", None) or getattr(store, "keys", None) or [])
    metadata = getattr(store, "metadata", {}) or {}
    rows = []
    for r in idx.tolist():
        if not 0 <= r < len(labels):
            raise IndexError(f"{store.path}: record {r} out of range (store has {len(labels)})")
        label = int(labels[r])
        row: dict[str, Any] = {"record": r, "label": label,
                               "class": classes[label] if 0 <= label < len(classes) else "",
                               "path": paths[r] if r < len(paths) else ""}
        row.update({name: values[r].item() for name, values in metadata.items()})
        rows.append(row)
    return rows


def audit_rows(store: Any, history: np.ndarray, ema: np.ndarray | None = None,
               top: int | None = None) -> list[dict[str, Any]]:
    """Records ranked by the persistence of their high loss (highest first), described.

    Args:
        store: the store the losses' record indices refer to.
        history: epochs x records per-epoch mean losses (NaN where unseen).
        ema: each record's moving-average loss (``last_loss``); default: its latest epoch's.
        top: keep only the first ``top`` rows.
    """
    history = np.asarray(history, dtype=np.float64)
    if history.ndim != 2 or history.shape[1] != len(store.labels):
        raise ValueError(f"{store.path}: the loss history covers {history.shape[-1]} records, the store holds "
                         f"{len(store.labels)}; audit it against the store it was recorded on")
    score = persistence(history)
    seen = np.flatnonzero(~np.isnan(score))
    order = seen[np.argsort(-score[seen], kind="stable")][:top]
    counts = (~np.isnan(history)).sum(axis=0)
    with np.errstate(invalid="ignore"):
        means = np.nansum(history, axis=0) / np.maximum(counts, 1)
    last = ema if ema is not None else _latest(history)
    rows = []
    for rank, info in enumerate(describe_records(store, order), 1):
        r = info["record"]
        rows.append({"rank": rank, "record": r, "persistence": round(float(score[r]), 6),
                     "mean_loss": float(means[r]), "last_loss": float(last[r]), "epochs_seen": int(counts[r]),
                     **{k: v for k, v in info.items() if k != "record"}})
    return rows


def _latest(history: np.ndarray) -> np.ndarray:
    out = np.full(history.shape[1], np.nan)
    for row in history:
        out = np.where(np.isnan(row), out, row)
    return out


def write_audit_csv(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> str:
    """Write audit rows as CSV (the standard columns first, then any metadata columns)."""
    extra = [k for k in (rows[0] if rows else {}) if k not in _COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_COLUMNS + extra)
        writer.writeheader()
        writer.writerows(rows)
    return os.fspath(path)


def save_loss_history(path: str | os.PathLike[str], *, store_paths: Sequence[str], history: np.ndarray,
                      epochs: np.ndarray, ema: np.ndarray) -> str:
    """A NumPy archive of the loss history and the store's files (its shards, in order); no pickled
    objects: read with ``allow_pickle=False``."""
    with open(path, "wb") as f:
        np.savez(f, store=np.asarray([os.fspath(p) for p in store_paths], dtype=str), history=np.asarray(history, np.float32),
                 epochs=np.asarray(epochs, np.int64), ema=np.asarray(ema, np.float64))
    return os.fspath(path)


def load_loss_history(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"store", "history", "epochs", "ema"}`` from ``save_loss_history``'s file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {"store": [str(p) for p in np.atleast_1d(data["store"])], "history": data["history"], "epochs": data["epochs"],
                    "ema": data["ema"]}
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a fastload loss history ({exc}); write one with "
                         "loader.save_loss_history(path)") from exc


def audit_history_file(history_path: str, output: str, store: str | None = None, top: int | None = None) -> int:
    """Rank the records of a saved loss history into ``output`` (CSV); returns the rows written."""
    from .stores import open_store

    saved = load_loss_history(history_path)
    paths = saved["store"]
    opened = open_store(store or (paths[0] if len(paths) == 1 else paths))
    rows = audit_rows(opened, saved["history"], saved["ema"], top=top)
    write_audit_csv(rows, output)
    return len(rows)
