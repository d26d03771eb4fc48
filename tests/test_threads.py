"""fastload/threads.py: the lazily started pool and run_all, which the host finish and the batch
stage hand their per-batch shares to."""

from __future__ import annotations

import threading

import pytest

from fastload.threads import LazyThreadPool, run_all


def test_run_all_returns_once_every_task_has_run():
    pool = LazyThreadPool(3, "test")
    gate, done = threading.Barrier(3), []

    def task(k: int) -> None:
        gate.wait(timeout=10)  # all three run at once: none is left queued when run_all returns
        done.append(k)

    run_all(pool.get(), [lambda k=k: task(k) for k in range(3)])
    assert sorted(done) == [0, 1, 2]
    run_all(pool.get(), [])  # nothing to do: returns at once
    pool.close()


def test_run_all_raises_a_task_error_after_the_others_finished():
    pool = LazyThreadPool(2, "test")
    release, finished = threading.Event(), []

    def slow() -> None:
        release.wait(timeout=10)
        finished.append("slow")

    def failing() -> None:
        release.set()
        raise ValueError("record 7 is not an image")

    with pytest.raises(ValueError, match="record 7"):
        run_all(pool.get(), [slow, failing])
    assert finished == ["slow"]  # the error waited for its sibling: no task outlives the call
    pool.close()


def test_the_stage_raises_the_error_of_the_lowest_failing_sample():
    from fastload.backends.dali.tail import TailStage
    from fastload.output import OutputSpec

    stage = TailStage(tail=[], seed=0, output=OutputSpec(), threads=3)

    def fn(i: int) -> int:
        if i in (5, 9):
            raise RuntimeError(f"sample {i} failed")
        return i * i

    assert stage._map(lambda i: i * i, 12, gpu=False) == [i * i for i in range(12)]
    with pytest.raises(RuntimeError, match="sample 5"):
        stage._map(fn, 12, gpu=False)
    stage.close()


def test_shares_cut_a_range_into_contiguous_runs_that_cover_it_once():
    from fastload.threads import shares

    parts = shares(range(1, 12), 3)
    assert [list(p) for p in parts] == [[1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert [len(p) for p in shares(range(2), 4)] == [0, 1, 0, 1]
