"""A thread pool started when first used, and again in a forked child (threads do not survive a
fork: a pool inherited from the parent would wait forever); the two ways work goes to it: a few
tasks at once (``run_all``), or a batch's samples in chunks taken when a thread is free
(``run_chunks``).

Every wake-up here is a byte through a pipe, written and read by ``os.write``/``os.read``, which
release the GIL around the system call. A ``queue``, ``Event`` or future wakes the waiting thread
while the waker holds the GIL: on busy cores the woken thread can preempt the waker right there,
and the GIL stays held by a thread that does not run until the scheduler returns to it (py-spy
``--gil``: ``Condition.notify`` in ``Event.set``/``Future.set_result``, 5-29% of the host stage's
GIL samples on 2 cores). With pipes the DALI train preset's GIL fell from 99-106 to 80-95 us per
image, eval's from 136-150 to 108-125, at the same or a slightly higher rate (2 cores, RESULTS 21).
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Sequence

__all__ = ["LazyThreadPool", "PipePool", "run_all", "run_chunks"]

_TASK, _QUIT = b"t", b"q"


class PipePool:
    """``threads`` threads that sleep in ``os.read`` on a pipe; ``submit`` queues a call and
    writes one byte, which wakes one thread to take it (see the module docstring: the GIL is not
    held across a wake-up). Tasks report their own errors (``run_all`` wraps them): one that
    raises leaves its thread running."""

    def __init__(self, threads: int, name: str, initializer: Callable[[], None] | None = None) -> None:
        self._read, self._write = os.pipe()
        self._tasks: collections.deque[Callable[[], object]] = collections.deque()
        self._left, self._lock = threads, threading.Lock()
        self._initializer = initializer
        for i in range(threads):
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True).start()

    def submit(self, task: Callable[[], object]) -> None:
        """Run ``task`` on the next free thread."""
        self._tasks.append(task)
        os.write(self._write, _TASK)

    def shutdown(self) -> None:
        """Let the threads go once they finish what they took; the last one closes the pipe."""
        os.write(self._write, _QUIT * self._left)

    def _work(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while os.read(self._read, 1) == _TASK:
            try:
                self._tasks.popleft()()
            except BaseException:  # noqa: BLE001 - a task reports its own error (run_all): the thread lives on
                pass
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            os.close(self._read)
            os.close(self._write)


def run_all(pool: PipePool, tasks: Sequence[Callable[[], object]]) -> None:
    """Run ``tasks`` on ``pool`` and return when all are done; the first exception is raised.

    The caller is woken once, by the last task to finish (through a pipe of its own: see the
    module docstring), instead of once per task as waiting on each future does."""
    if not tasks:
        return
    lock, left, errors, abandoned = threading.Lock(), [len(tasks)], [], [False]
    done, finished = os.pipe()

    def close() -> None:
        os.close(done)
        os.close(finished)

    def run(task: Callable[[], object]) -> None:
        try:
            task()
        except BaseException as exc:  # handed to the caller
            errors.append(exc)
        finally:
            with lock:  # the wake-up is written under the lock: the caller closes only after it
                left[0] -= 1
                if left[0] == 0 and abandoned[0]:  # the caller stopped waiting (an interrupt)
                    close()
                elif left[0] == 0:
                    os.write(finished, b"x")

    try:
        for task in tasks:
            pool.submit(lambda task=task: run(task))
        os.read(done, 1)
    finally:
        with lock:  # closed here only once no task can write: a closed number may be reused
            over = left[0] == 0
            abandoned[0] = not over
        if over:
            close()
    if errors:
        raise errors[0]


def run_chunks(pool: PipePool, count: int, threads: int, work: Callable[[range], object],
               cost: Callable[[], Sequence[float]] | None = None, per_thread: int = 4) -> None:
    """Run ``work`` on ``range(count)`` cut into contiguous chunks (about ``per_thread`` per thread,
    at least one item each), each of ``threads`` threads taking the next chunk when it is free; the
    first exception is raised once all are done. ``cost`` (called only where chunks would hold one
    or two items: many threads) estimates each item's cost: items then go one at a time, the
    costliest first.

    Why not one fixed share per thread: samples differ in cost (a random-resized crop resizes
    windows of 8-100% of the image: 67-181 us a sample, p10-p90, in the train preset), so fixed shares
    of a 64-sample batch leave threads waiting for the slowest: busy 95% of the time at 2 threads,
    83% at 8, 73% at 16 (simulated from measured per-sample costs); chunks taken when free: 99%,
    93% and 83%; one at a time, largest window first (the cost there correlates 0.92 with the
    window's area): 97% at 8 threads, 94% at 16."""
    size = max(1, count // max(1, threads * per_thread))
    if cost is not None and size <= 2:
        costs = cost()
        chunks = iter([range(i, i + 1) for i in sorted(range(count), key=lambda i: -costs[i])])
        size = 1
    else:
        chunks = iter([range(start, min(start + size, count)) for start in range(0, count, size)])

    def take() -> None:
        for chunk in chunks:  # the next chunk, whichever thread is free (next() holds the GIL)
            work(chunk)

    run_all(pool, [take] * min(threads, -(-count // size)))


class LazyThreadPool:
    """Args:
        threads: the pool's threads.
        name: the threads' name prefix.
        initializer: run once in each thread as it starts.
    """

    def __init__(self, threads: int, name: str, initializer: Callable[[], None] | None = None) -> None:
        self.threads, self._name, self._initializer = threads, name, initializer
        self._pool: tuple[int, PipePool] | None = None  # (pid, pool)

    def get(self) -> PipePool:
        """The pool of this process, started now if needed."""
        if self._pool is None or self._pool[0] != os.getpid():
            self._pool = (os.getpid(), PipePool(self.threads, self._name, self._initializer))
        return self._pool[1]

    def close(self) -> None:
        """Let the threads go (a later ``get`` starts a new pool)."""
        if self._pool is not None:
            pid, pool = self._pool
            self._pool = None
            if pid == os.getpid():
                pool.shutdown()
