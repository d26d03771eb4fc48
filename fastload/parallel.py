"""An ordered, bounded parallel map over worker processes that never hangs on a dead worker."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from .errors import WorkerDiedError

__all__ = ["ordered_map", "default_workers"]

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    import cv2

    # One OpenCV thread per worker process: the processes are the parallelism.
    cv2.setNumThreads(1)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def ordered_map(
    fn: Callable[[Sequence[T], Any], list[R]],
    items: Sequence[T],
    context: Any,
    workers: int,
    chunk_size: int = 16,
    describe: Callable[[Sequence[T]], str] = lambda chunk: f"{len(chunk)} items",
) -> Iterable[R]:
    """Yield ``fn(chunk, context)`` results in input order, at most ``4 * workers`` chunks ahead.

    ``fn`` must be a module-level function (it crosses a process boundary). With one worker it
    runs in this process. A worker that dies raises WorkerDiedError naming its chunk.
    """
    if workers <= 1:
        for chunk in _chunks(items, chunk_size):
            yield from fn(chunk, context)
        return
    ctx = multiprocessing.get_context("spawn")  # no inherited locks, threads or handles
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker)
    pending: deque[tuple[Future[list[R]], Sequence[T]]] = deque()
    chunks = _chunks(items, chunk_size)
    try:
        for chunk in chunks:
            pending.append((pool.submit(fn, chunk, context), chunk))
            if len(pending) >= 4 * workers:
                yield from _collect(*pending.popleft(), describe)
        while pending:
            yield from _collect(*pending.popleft(), describe)
    finally:
        for future, _ in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _collect(future: Future, chunk: Sequence[Any], describe: Callable[[Sequence[Any]], str]) -> list[Any]:
    try:
        return future.result()
    except BrokenProcessPool:
        raise WorkerDiedError(
            f"a worker process died (killed, or out of memory) while processing {describe(chunk)}; "
            "re-run, or use fewer workers (--workers) if memory is short"
        ) from None
