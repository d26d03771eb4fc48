"""The epoch plan that per-record losses steer: the Loader's side of ``loss_sampling=``.

The Loader hands this object its own plan once (the balanced or given weights, the subset): at
each epoch's start the losses given since are committed (a collective under torch.distributed)
and the plan of that epoch becomes the base plan with its weights multiplied by the losses'
(fastload.loss_sampling). A resumed pass keeps the weights its epoch was planned with.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from .loss_sampling import LossSampling, LossTracker
from .sampling import EpochPlan, SamplerPlan

__all__ = ["LossSteering"]


class LossSteering:
    """Per-record losses of one Loader and the plans they give.

    Args:
        options: the Loader's ``loss_sampling=``.
        plan: the Loader's own plan (the weights the losses multiply).
        num_records: records in the store (losses are indexed by store record).
        records: the Loader's subset of store records (``indices=``), or None for all.
    """

    def __init__(self, options: LossSampling, plan: EpochPlan, num_records: int, records: np.ndarray | None) -> None:
        self.tracker = LossTracker(num_records, options)
        self.base_plan, self.records = plan, records

    @classmethod
    def build(cls, options: LossSampling | bool | None, plan: EpochPlan | SamplerPlan, num_records: int,
              records: np.ndarray | None) -> LossSteering | None:
        """The steering ``loss_sampling=`` asks for, or None when it is off."""
        if options is None or options is False:
            return None
        if options is True:
            options = LossSampling()
        if not isinstance(options, LossSampling):
            raise TypeError(f"loss_sampling must be a fastload.LossSampling, True or None, got {options!r}")
        if isinstance(plan, SamplerPlan):
            raise ValueError("loss_sampling= plans the order itself: give it without a sampler object "
                             "(sampler='balanced', weights= and indices= combine with it)")
        return cls(options, plan, num_records, records)

    def begin_epoch(self, epoch: int, start: int) -> EpochPlan | None:
        """At a pass's start: the plan of ``epoch`` when losses committed now change it."""
        plan = self.commit() if start == 0 else None
        self.tracker.epoch = epoch  # the epoch the next updates come from (the audit's history rows)
        return plan

    def commit(self) -> EpochPlan | None:
        """Commit the losses given so far (a collective under torch.distributed): the new plan,
        or None when nothing was committed."""
        return self.plan() if self.tracker.commit() else None

    def plan(self) -> EpochPlan | None:
        """The base plan with the losses' weights, or None while they do not steer."""
        tracker = self.tracker
        if not tracker.steering or not isinstance(self.base_plan, EpochPlan):
            return None
        multipliers = tracker.multipliers if self.records is None else tracker.multipliers[self.records]
        base = self.base_plan.weights
        weights = multipliers if base is None else base * multipliers
        if not weights.sum() > 0:  # exclusion met every record the base weights allow: keep those
            weights = np.ones_like(multipliers) if base is None else base
        return dataclasses.replace(self.base_plan, weights=weights)

    def audit(self, store: Any, path: str | os.PathLike[str] | None, top: int | None) -> list[dict[str, Any]]:
        """The label audit's rows (fastload.audit), written as CSV to ``path`` when given."""
        from .audit import audit_rows, write_audit_csv

        rows = audit_rows(store, self.tracker.history, self.tracker.ema, top=top)
        if path is not None:
            write_audit_csv(rows, path)
        return rows

    def save_history(self, store: Any, path: str | os.PathLike[str]) -> str:
        """The loss history as a NumPy archive for ``fastload audit PATH``."""
        from .audit import save_loss_history

        t = self.tracker
        return save_loss_history(path, store_paths=[s.path for s in store.shards], history=t.history,
                                 epochs=t.history_epochs, ema=t.ema)
