"""The shard-window shuffle and the elastic resume, on plans alone (no store, no server): the
global order does not depend on the world size, so a state saved at W ranks resumes at W' ranks
with exactly the samples no rank has seen."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.epochs import EpochState
from fastload.sampling import EpochPlan, shard_window_order

SIZES = (5, 7, 6, 4, 8)  # records per shard: 30 in all


def test_shard_windows_hold_the_records_of_their_shards_only():
    order = shard_window_order(np.random.default_rng(3), SIZES, 2)
    assert sorted(order.tolist()) == list(range(sum(SIZES)))
    starts = np.cumsum((0,) + SIZES)
    shard_of = np.searchsorted(starts, order, side="right") - 1
    seen: list[set[int]] = []
    at = 0
    while at < len(order):  # windows are runs of two shards (the last may hold one)
        window = set()
        while at < len(order) and (len(window) < 2 or int(shard_of[at]) in window):
            window.add(int(shard_of[at]))
            at += 1
        seen.append(window)
    assert len(seen) == 3 and set().union(*seen) == set(range(len(SIZES)))
    with pytest.raises(ValueError, match="at least one shard"):
        shard_window_order(np.random.default_rng(0), SIZES, 0)


@pytest.mark.parametrize("shards", [None, SIZES])
@pytest.mark.parametrize("before,after", [(2, 1), (2, 3), (3, 2), (1, 4)])
def test_a_state_saved_at_one_world_size_resumes_at_another(shards, before, after):
    plans = [EpochPlan(num_records=30, batch_size=2, seed=7, rank=r, world_size=before, shard_sizes=shards)
             for r in range(before)]
    assert len({tuple(p.global_order(1)) for p in plans}) == 1
    seen: list[int] = []
    for plan in plans:  # every rank takes 2 batches of epoch 1, then a checkpoint
        state = EpochState(plan, rank=plan.rank, world_size=before)
        state.next_epoch = 1
        progress = state.begin_pass()
        batches = state.pass_batches(progress)
        seen += [int(i) for b in batches[:2] for i in b]
        progress.position = 2
    saved = state.state_dict()
    assert saved["epoch"] == 1 and saved["seen"] == 2 * 2 * before and saved["version"] == 3
    rest: list[int] = []
    lengths = set()
    for rank in range(after):
        plan = EpochPlan(num_records=30, batch_size=2, seed=7, rank=rank, world_size=after, shard_sizes=shards)
        resumed = EpochState(plan, rank=rank, world_size=after)
        resumed.load_state_dict(saved)
        length = resumed.upcoming_length()
        batches = resumed.pass_batches(resumed.begin_pass())
        assert len(batches) == length
        lengths.add(length)
        rest += [int(i) for b in batches for i in b]
    assert len(lengths) == 1  # equal batch counts on every rank (a collective per batch cannot hang)
    unseen = sorted(set(range(30)) - set(seen))
    assert sorted(set(rest)) == unseen  # exactly the unseen samples (padding repeats some of them)
    assert len(rest) - len(unseen) < after


def test_a_state_of_another_order_kind_is_refused():
    full = EpochState(EpochPlan(num_records=30, batch_size=2, seed=7), rank=0, world_size=1)
    windows = EpochState(EpochPlan(num_records=30, batch_size=2, seed=7, shard_sizes=SIZES), rank=0, world_size=1)
    with pytest.raises(ValueError, match="saved order is global"):
        windows.load_state_dict(full.state_dict())
    old = {k: v for k, v in full.state_dict().items() if k not in ("seen", "order")}  # a version-2 state
    old.update(version=2, batch=3)
    full.load_state_dict(old)
    assert full.next_pass() == (0, 3)
