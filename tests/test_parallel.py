"""fastload.parallel.ordered_map: order, bounded look-ahead, errors, and dead workers."""

from __future__ import annotations

import os
import signal
import time

import pytest

from fastload.errors import WorkerDiedError
from fastload.parallel import ordered_map


def square_slowly(chunk, delay):
    # Later chunks finish first (smaller delay), so results must be reordered.
    time.sleep(delay / (1 + chunk[0]))
    return [x * x for x in chunk]


def fail_on_seven(chunk, _):
    if 7 in chunk:
        raise ValueError("seven is not allowed")
    return list(chunk)


def die_on_five(chunk, _):
    if 5 in chunk:
        os.kill(os.getpid(), signal.SIGKILL)  # test-only stand-in for the OOM killer
    return list(chunk)


def exit_on_three(chunk, _):
    if 3 in chunk:
        os._exit(7)
    return list(chunk)


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_input_order(workers):
    items = list(range(40))
    assert list(ordered_map(square_slowly, items, 0.01, workers, chunk_size=3)) == [x * x for x in items]


def test_empty_and_single_chunk():
    assert list(ordered_map(square_slowly, [], 0.0, 2)) == []
    assert list(ordered_map(square_slowly, [1, 2], 0.0, 2, chunk_size=16)) == [1, 4]


def test_worker_exception_is_reraised():
    with pytest.raises(ValueError, match="seven"):
        list(ordered_map(fail_on_seven, list(range(20)), None, 2, chunk_size=2))


def test_killed_worker_is_named_with_its_chunk():
    describe = lambda chunk: f"items {chunk[0]}..{chunk[-1]}"  # noqa: E731 - parent side only
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match=r"was killed by SIGKILL while processing items 4\.\.5"):
        list(ordered_map(die_on_five, list(range(12)), None, 2, chunk_size=2, describe=describe))
    assert time.monotonic() - start < 30  # never a hang


def test_worker_exit_status_is_reported():
    with pytest.raises(WorkerDiedError, match="exited with status 7 while processing 2 items"):
        list(ordered_map(exit_on_three, list(range(12)), None, 2, chunk_size=2))


def test_consumer_stopping_early_shuts_workers_down():
    results = ordered_map(square_slowly, list(range(100)), 0.0, 2, chunk_size=2)
    assert next(iter(results)) == 0
    results.close()  # GeneratorExit: the pool is torn down, no process left behind
    import multiprocessing

    assert not [p for p in multiprocessing.active_children() if p.name == "fastload-worker"]
