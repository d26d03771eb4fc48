"""Which epoch, and which batch of it, the Loader's next pass starts at; ``state_dict`` saves it.

Without a word from the user each pass starts the epoch after the latest one, as a shuffling
DataLoader does; ``pin`` (``Loader.set_epoch``) makes every pass follow one epoch's order, as
DistributedSampler.set_epoch does; ``load_state_dict`` makes the next pass continue a saved epoch
from its first unseen batch. The order itself is the plan's (fastload.sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .sampling import EpochPlan, SamplerPlan

__all__ = ["EpochState", "Progress", "STATE_VERSION"]

STATE_VERSION = 2


@dataclass
class Progress:
    """How far the latest pass got: its epoch and the batches of it handed out so far."""

    epoch: int
    position: int


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
        self.progress: Progress | None = None  # the latest pass's (kept when it is dropped)

    def next_pass(self) -> tuple[int, int]:
        """(epoch, first batch) of the pass that ``iter()`` starts now."""
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

    def begin_pass(self) -> Progress:
        """Start the next pass: its progress, which the pass moves on as it hands out batches."""
        epoch, start = self.next_pass()
        self.resume = None
        self.next_epoch = epoch + 1
        self.progress = Progress(epoch, start)
        return self.progress

    def pin(self, epoch: int) -> None:
        """Every following pass takes ``epoch``'s order (a resume point in another epoch is dropped)."""
        self.pinned = int(epoch)
        if self.resume is not None and self.resume[0] != self.pinned:
            self.resume = None

    def state_dict(self) -> dict[str, Any]:
        """Where the loader stands (see ``Loader.state_dict``)."""
        latest = self.progress
        if self.resume is not None or latest is None:
            epoch, batch = self.next_pass()
        elif latest.position >= len(self.plan):
            epoch, batch = latest.epoch + 1, 0
        else:
            epoch, batch = latest.epoch, latest.position
        return {
            "version": STATE_VERSION, "epoch": epoch, "batch": batch,
            "seed": self.plan.seed, "num_records": self.plan.num_records,
            "batch_size": self.plan.batch_size, "rank": self.rank, "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict()``: the next pass yields the same epoch's unseen batches."""
        for key in ("seed", "num_records", "batch_size", "world_size"):
            mine = getattr(self.plan, key, None) if key != "world_size" else self.world_size
            if state.get(key) != mine:
                raise ValueError(f"cannot resume: the saved {key} is {state.get(key)}, this loader's "
                                 f"is {mine}; build the loader with the same settings")
        epoch, batch = int(state["epoch"]), int(state["batch"])
        self.pinned = None
        self.next_epoch = epoch
        self.resume = (epoch, batch) if batch > 0 else None
