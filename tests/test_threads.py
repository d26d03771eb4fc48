"""fastload/threads.py: the lazily started pool (threads woken through a pipe), run_all and
run_chunks, which the host stage and the batch stage hand their per-batch shares to."""

from __future__ import annotations

import threading

import pytest

from fastload.threads import LazyThreadPool, run_all, run_chunks


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


def test_run_chunks_lets_a_free_thread_take_the_next_chunk_while_another_is_held():
    """A slow sample does not hold back the rest of its thread's fixed share: here the first item
    waits until every other item is done, which only a free thread taking the next chunk allows
    (fixed halves would leave items 1-3 behind item 0 on the held thread until the wait fails)."""
    pool = LazyThreadPool(2, "test")
    others_done, seen, lock = threading.Event(), [], threading.Lock()

    def work(chunk: range) -> None:
        for i in chunk:
            if i == 0:
                assert others_done.wait(timeout=30)
            with lock:
                seen.append(i)
                if len(seen) == 7 and 0 not in seen:
                    others_done.set()

    run_chunks(pool.get(), 8, 2, work)
    assert sorted(seen) == list(range(8)) and seen[-1] == 0
    pool.close()


@pytest.mark.parametrize("count,threads", [(0, 2), (1, 4), (5, 2), (64, 16), (64, 2)])
def test_run_chunks_runs_every_item_once_and_raises_an_error_after(count, threads):
    pool = LazyThreadPool(threads, "test")
    seen, lock = [], threading.Lock()

    def work(chunk: range) -> None:
        with lock:
            seen.extend(chunk)

    run_chunks(pool.get(), count, threads, work)
    assert sorted(seen) == list(range(count))
    if count:
        def failing(chunk: range) -> None:
            if 0 in chunk:
                raise ValueError("record 0 is not an image")

        with pytest.raises(ValueError, match="record 0"):
            run_chunks(pool.get(), count, threads, failing)
    pool.close()


def test_run_chunks_hands_out_the_costliest_items_first_when_threads_are_many():
    """With one or two items a chunk (many threads), items go one at a time, costliest first (the
    longest-first order that balances threads best); with few threads the cost is never asked."""
    pool = LazyThreadPool(1, "test")  # one thread of the pool: the order items are taken in
    seen = []
    run_chunks(pool.get(), 5, 4, lambda chunk: seen.extend(chunk), cost=lambda: [1, 5, 3, 4, 2])
    assert seen == [1, 3, 2, 4, 0]

    def never() -> list[float]:
        raise AssertionError("cost asked for at 2 threads")

    seen.clear()
    run_chunks(pool.get(), 64, 2, lambda chunk: seen.extend(chunk), cost=never)
    assert seen == list(range(64))
    pool.close()


def test_a_pool_thread_outlives_a_failing_task_and_all_threads_end_on_close():
    """A task that raises leaves its thread serving (``run_all`` hands the error to the caller);
    ``close`` ends every thread once it has finished what it took, and a later ``get`` starts anew."""
    pool = LazyThreadPool(2, "test-pipe")
    with pytest.raises(ValueError, match="bad sample"):
        run_all(pool.get(), [lambda: (_ for _ in ()).throw(ValueError("bad sample"))] * 3)
    seen = []
    run_all(pool.get(), [lambda k=k: seen.append(k) for k in range(5)])
    assert sorted(seen) == list(range(5))
    threads = [t for t in threading.enumerate() if t.name.startswith("test-pipe_")]
    assert len(threads) == 2
    pool.close()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    run_all(pool.get(), [lambda: seen.append("again")])
    assert seen[-1] == "again"
    pool.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
def test_a_forked_child_gets_a_pool_of_its_own():
    """Threads do not survive a fork: the child's ``get`` starts a pool whose threads run its tasks."""
    import os

    pool = LazyThreadPool(2, "test-fork")
    run_all(pool.get(), [lambda: None])
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its own pool ran the task
        ran = []
        try:
            run_all(pool.get(), [lambda: ran.append(1)])
        finally:
            os._exit(0 if ran == [1] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    pool.close()
