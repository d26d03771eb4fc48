"""Which epoch, and which batch of it, the Loader's next pass starts at; ``state_dict`` saves it.

Without a word from the user each pass starts the epoch after the latest one, as a shuffling
DataLoader does; ``pin`` (``Loader.set_epoch``) makes every pass follow one epoch's order, as
DistributedSampler.set_epoch does; ``load_state_dict`` makes the next pass continue a saved epoch
from its first unseen batch. The order itself is the plan's (fastload.sampling).

A state also records the global samples of the epoch seen (``seen``): the global order of an
EpochPlan does not depend on the world size, so a run saved at W ranks resumes at W' ranks with
exactly the samples no rank has seen yet (an elastic resume: ``EpochPlan.batches_after``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .sampling import EpochPlan, SamplerPlan

__all__ = ["EpochState", "Progress", "STATE_VERSION"]

STATE_VERSION = 3  # 3: "seen" and "order", so a resume may change the world size (2 still loads)


@dataclass
class Progress:
    """How far the latest pass got: its epoch and the batches of it handed out so far."""

    epoch: int
    position: int
    seen: int | None = None  # an elastic resume: global samples seen before this pass's first batch
    length: int = 0  # the pass's batches, resumed ones included


class EpochState:
    """The Loader's epoch counter, pinned epoch, resume point and latest pass's progress.

    Args:
        plan: the batches of each epoch.
        world_size: ranks sharing the data (a saved state resumes only at the same count).
        rank: this process's rank (saved with the state).
        sampler: the user's sampler, if any: one moved to an epoch (DistributedSampler.set_epoch)
            moves the augmentations' epoch too.
    """

    def __init__(self, plan: EpochPlan | SamplerPlan, *, rank: int, world_size: int, sampler: Any = None) -> None:
        self.plan, self.rank, self.world_size, self.sampler = plan, rank, world_size, sampler
        self.next_epoch = 0
        self.pinned: int | None = None  # set_epoch: every pass follows this epoch's order
        self.resume: tuple[int, int] | None = None  # load_state_dict: (epoch, batch) to continue
        self.elastic: tuple[int, int] | None = None  # load_state_dict at another world size: (epoch, seen)
        self.progress: Progress | None = None  # the latest pass's (kept when it is dropped)

    def next_pass(self) -> tuple[int, int]:
        """(epoch, first batch) of the pass that ``iter()`` starts now."""
        if self.elastic is not None:
            return self.elastic[0], 0
        if self.resume is not None:
            return self.resume
        if self.pinned is not None:
            return self.pinned, 0
        # A user's sampler that was moved to an epoch (DistributedSampler.set_epoch, as the
        # ImageNet example calls it) sets the augmentations' epoch too, so a resumed run redraws them.
        sampler_epoch = getattr(self.sampler, "epoch", 0)
        if isinstance(sampler_epoch, int) and sampler_epoch > 0:
            return sampler_epoch, 0
        return self.next_epoch, 0

    def planned_batches(self, epoch: int, start: int) -> tuple[list[np.ndarray], int | None]:
        """The pass's batches, and the global samples seen before it when it resumes a run
        saved at another world size (None otherwise)."""
        if self.elastic is not None and self.elastic[0] == epoch and isinstance(self.plan, EpochPlan):
            return self.plan.batches_after(epoch, self.elastic[1]), self.elastic[1]
        return self.plan.batches(epoch, start), None

    def upcoming_length(self) -> int:
        """Batches the pass that ``iter()`` starts now will hand out."""
        epoch, start = self.next_pass()
        if self.elastic is not None:
            return len(self.planned_batches(epoch, start)[0])
        return len(self.plan) - start

    def begin_pass(self) -> Progress:
        """Start the next pass: its progress, which the pass moves on as it hands out batches."""
        epoch, start = self.next_pass()
        self.resume = None
        self.next_epoch = epoch + 1
        self.progress = Progress(epoch, start, length=len(self.plan))
        return self.progress

    def pass_batches(self, progress: Progress) -> list[np.ndarray]:
        """The batches of the pass just begun (its plan may have been steered since ``begin_pass``);
        an elastic resume point is used up by them."""
        batches, seen = self.planned_batches(progress.epoch, progress.position)
        self.elastic = None
        progress.seen = seen
        progress.length = progress.position + len(batches)
        return batches

    def pin(self, epoch: int) -> None:
        """Every following pass takes ``epoch``'s order (a resume point in another epoch is dropped)."""
        self.pinned = int(epoch)
        if self.resume is not None and self.resume[0] != self.pinned:
            self.resume = None
        if self.elastic is not None and self.elastic[0] != self.pinned:
            self.elastic = None

    def order_kind(self) -> str:
        """The kind of global order: a full permutation, or shard windows of a remote store
        (a state saved with one cannot resume with the other)."""
        sizes = getattr(self.plan, "shard_sizes", None)
        return "global" if sizes is None else f"shards/{getattr(self.plan, 'shard_window', 0)}"

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands (see ``Loader.state_dict``)."""
        latest, seen = self.progress, None
        if self.elastic is not None:
            (epoch, seen), batch = self.elastic, 0
        elif self.resume is not None or latest is None:
            epoch, batch = self.next_pass()
        elif latest.position >= latest.length:
            epoch, batch = latest.epoch + 1, 0
        else:
            epoch, batch = latest.epoch, latest.position
            if latest.seen is not None:  # a pass resumed from another world size
                seen = latest.seen + latest.position * self.plan.batch_size * self.world_size
        if seen is None and isinstance(self.plan, EpochPlan):
            seen = self.plan.seen_after(batch)
        return {
            "version": STATE_VERSION, "epoch": epoch, "batch": batch, "seen": seen,
            "seed": self.plan.seed, "num_records": self.plan.num_records,
            "batch_size": self.plan.batch_size, "rank": self.rank, "world_size": self.world_size,
            "order": self.order_kind(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``: the next pass yields the same epoch's unseen samples.

        The world size may differ from the saved run's (an elastic resume, states of version 3
        on): the global order does not depend on it, so the samples no rank has seen yet are
        split over this run's ranks, each with the augmentation it would have had."""
        seen = state.get("seen")
        elastic = seen is not None and isinstance(self.plan, EpochPlan)
        for key in ("seed", "num_records", "batch_size", "world_size", "order"):
            if key == "world_size" and elastic or key == "order" and "order" not in state:
                continue
            mine = {"world_size": self.world_size, "order": self.order_kind()}.get(key, getattr(self.plan, key, None))
            if state.get(key) != mine:
                raise ValueError(f"cannot resume: the saved {key} is {state.get(key)}, this loader's "
                                 f"is {mine}; build the loader with the same settings")
        epoch, batch = int(state["epoch"]), int(state["batch"])
        self.pinned = None
        self.next_epoch = epoch
        self.resume = self.elastic = None
        if state.get("world_size") == self.world_size and (not elastic or seen == self.plan.seen_after(batch)):
            self.resume = (epoch, batch) if batch > 0 else None
        elif int(seen) > 0:
            self.elastic = (epoch, int(seen))
