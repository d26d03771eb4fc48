"""Sampling that follows the losses: hard-sample mining and a per-record loss history.

    loader = fastload.Loader("train.lmdb", batch_size=64, shuffle=True, return_index=True,
                             loss_sampling=fastload.LossSampling(floor=0.2, exclude_top=0.05))
    for epoch in range(epochs):
        for images, labels, idx in loader:
            losses = F.cross_entropy(model(images), labels, reduction="none")
            losses.mean().backward(); ...
            loader.sampler.update(idx, losses)     # per-sample losses, any device
        # the next epoch draws records in proportion to their recent losses

During an epoch ``update`` only adds each record's losses to a pending sum (O(batch), no
collective). When the next epoch begins, the pending sums of every rank are added up (one
all_reduce under torch.distributed), each record's epoch-mean loss enters its moving average and
the history, and the weights are computed again from the averages: every rank then holds the same
numbers, so every rank plans the same global order from ``(seed, epoch, weights)``.

Weights (a multiplier on the loader's own weights, such as ``sampler="balanced"``'s):
``max(floor, (ema / mean_ema) ** power)``: a record with twice the typical loss is drawn twice as
often, an easy one never less than ``floor`` times as often; a record not seen yet counts as
typical. ``exclude_top`` leaves out that fraction of the records whose loss stays highest across
the epochs kept (likely mislabels), once ``exclude_after`` epochs of history exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LossSampling", "LossTracker", "persistence"]


@dataclass(frozen=True)
class LossSampling:
    """How per-record losses steer sampling (``Loader(loss_sampling=...)``).

    Attributes:
        steer: draw records by their losses from the epoch after the first update; False keeps
            the loader's order and only records the history (for ``loader.audit``).
        momentum: weight of the past in each record's moving average of its epoch-mean loss.
        power: how steeply weight grows with relative loss (1: in proportion).
        floor: the smallest weight, relative to a typical record (so nothing vanishes).
        exclude_top: fraction (0..0.5) of records with persistently high loss left out of sampling.
        exclude_after: epochs of loss history needed before any record is left out.
        history: epochs of per-record losses kept for the audit (and for ``exclude_top``).
    """

    steer: bool = True
    momentum: float = 0.5
    power: float = 1.0
    floor: float = 0.1
    exclude_top: float = 0.0
    exclude_after: int = 2
    history: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"LossSampling.momentum must lie in [0, 1), got {self.momentum}")
        if not self.power >= 0.0:
            raise ValueError(f"LossSampling.power must be >= 0, got {self.power}")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"LossSampling.floor must lie in (0, 1] so no record vanishes, got {self.floor}")
        if not 0.0 <= self.exclude_top <= 0.5:
            raise ValueError(f"LossSampling.exclude_top is a fraction of records in [0, 0.5], got {self.exclude_top}")
        if self.exclude_after < 1 or self.history < 1:
            raise ValueError("LossSampling.exclude_after and history must be >= 1 epoch")


def persistence(history: np.ndarray) -> np.ndarray:
    """How persistently each record's loss stays high: its mean percentile (0 lowest, 1 highest)
    among the records seen in each epoch of ``history`` (epochs x records, NaN where unseen).

    Percentiles, not raw losses, so that early epochs (when every loss is high) weigh no more
    than late ones. NaN for records never seen.
    """
    history = np.asarray(history, dtype=np.float64)
    ranks = np.full(history.shape, np.nan)
    for row, losses in enumerate(history):
        seen = np.flatnonzero(~np.isnan(losses))
        if seen.size == 0:
            continue
        order = np.argsort(losses[seen], kind="stable")
        pct = np.empty(seen.size)
        pct[order] = np.arange(seen.size) / max(1, seen.size - 1)
        ranks[row, seen] = pct
    counts = (~np.isnan(ranks)).sum(axis=0)
    total = np.nansum(ranks, axis=0)
    return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def _as_numpy(values: Any, dtype: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().to("cpu").numpy()
    return np.asarray(values, dtype=dtype).reshape(-1)


class LossTracker:
    """Per-record losses of one Loader: pending updates, moving averages, history, weights.

    Indexed by store record (what ``return_index=True`` yields), whatever the loader's subset.
    """

    def __init__(self, num_records: int, options: LossSampling) -> None:
        self.options, self.num_records = options, num_records
        self._sum = np.zeros(num_records)
        self._count = np.zeros(num_records)
        self.ema = np.full(num_records, np.nan)
        self.history = np.full((0, num_records), np.nan, dtype=np.float32)  # oldest epoch first
        self.history_epochs = np.zeros(0, dtype=np.int64)
        self.multipliers = np.ones(num_records)
        self.steering = False  # True once losses were committed and options.steer
        self.epoch = 0  # the epoch the pending updates come from (set by the Loader)

    def update(self, indices: Any, losses: Any) -> None:
        """Add per-sample ``losses`` of the store records ``indices`` (a batch's, from return_index)."""
        idx = _as_numpy(indices, np.int64)
        loss = _as_numpy(losses, np.float64)
        if idx.shape != loss.shape:
            raise ValueError(f"sampler.update got {idx.size} indices and {loss.size} losses: give one "
                             "loss per sample (reduction='none')")
        bad = idx[(idx < 0) | (idx >= self.num_records)]
        if bad.size:
            raise IndexError(f"sampler.update got record {int(bad[0])}, outside 0..{self.num_records - 1}; "
                             "give the indices the loader yields with return_index=True")
        if not np.isfinite(loss).all():
            at = int(idx[~np.isfinite(loss)][0])
            raise ValueError(f"sampler.update got a non-finite loss for record {at}; skip the batch or fix the loss")
        np.add.at(self._sum, idx, loss)
        np.add.at(self._count, idx, 1.0)

    def _reduce(self) -> None:
        """Sum the pending updates of every rank (one all_reduce), so all ranks hold the same."""
        try:
            import torch
            import torch.distributed as dist
        except ImportError:
            return
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        both = torch.from_numpy(np.stack([self._sum, self._count])).to(device)
        dist.all_reduce(both)
        summed = both.cpu().numpy()
        self._sum, self._count = summed[0].copy(), summed[1].copy()

    def commit(self) -> bool:
        """Close an epoch's updates (a collective under torch.distributed: every rank calls it at
        the start of the same epoch). Returns whether any loss was committed."""
        self._reduce()
        seen = self._count > 0
        if not seen.any():
            return False
        mean = np.full(self.num_records, np.nan)
        mean[seen] = self._sum[seen] / self._count[seen]
        m = self.options.momentum
        had = ~np.isnan(self.ema)
        self.ema = np.where(seen & had, m * self.ema + (1 - m) * mean, np.where(seen, mean, self.ema))
        keep = self.options.history
        self.history = np.concatenate([self.history, mean[None].astype(np.float32)])[-keep:]
        self.history_epochs = np.append(self.history_epochs, self.epoch)[-keep:]
        self._sum, self._count = np.zeros(self.num_records), np.zeros(self.num_records)
        self.multipliers = self._weights()
        self.steering = self.options.steer
        return True

    def _weights(self) -> np.ndarray:
        o = self.options
        seen = ~np.isnan(self.ema)
        rel = np.ones(self.num_records)
        typical = float(np.mean(self.ema[seen])) if seen.any() else 0.0
        if typical > 0:
            rel[seen] = (np.maximum(self.ema[seen], 0.0) / typical) ** o.power
        weights = np.maximum(rel, o.floor)
        if o.exclude_top > 0 and len(self.history) >= o.exclude_after:
            score = persistence(self.history)
            scored = np.flatnonzero(~np.isnan(score))
            k = math.floor(o.exclude_top * scored.size)
            if k:
                top = scored[np.argsort(-score[scored], kind="stable")[:k]]
                weights[top] = 0.0
        return weights

    # --- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Tensors (safe for ``torch.load(weights_only=True)``) and plain numbers."""
        import torch

        return {"sum": torch.from_numpy(self._sum.copy()), "count": torch.from_numpy(self._count.copy()),
                "ema": torch.from_numpy(self.ema.copy()), "history": torch.from_numpy(self.history.copy()),
                "history_epochs": torch.from_numpy(self.history_epochs.copy()),
                "multipliers": torch.from_numpy(self.multipliers.copy()), "steering": bool(self.steering),
                "epoch": int(self.epoch)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ema = np.asarray(state["ema"], dtype=np.float64)
        if ema.shape != (self.num_records,):
            raise ValueError(f"cannot resume the loss sampling: the saved losses cover {ema.size} records, "
                             f"this loader's store has {self.num_records}; resume with the same store")
        self.ema = ema.copy()
        self._sum = np.asarray(state["sum"], dtype=np.float64).copy()
        self._count = np.asarray(state["count"], dtype=np.float64).copy()
        self.history = np.asarray(state["history"], dtype=np.float32).reshape(-1, self.num_records).copy()
        self.history_epochs = np.asarray(state["history_epochs"], dtype=np.int64).copy()
        self.multipliers = np.asarray(state["multipliers"], dtype=np.float64).copy()
        self.steering = bool(state["steering"])
        self.epoch = int(state["epoch"])
