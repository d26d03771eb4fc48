"""An ordered, bounded parallel map over worker processes that never hangs on a dead worker.

Each worker has its own pipes, so the parent always knows which chunk each worker holds: when
one dies (killed, out of memory) the error names the worker, how it died and the chunk it was
processing, instead of the "a process in the pool terminated abruptly" a shared pool gives.
The work is named (``"module:qualname"``); chunks, context and results travel as messages of
JSON and raw bytes (``channel``), errors as JSON reports (``failures``).
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .channel import read_message, send_message
from .failures import rebuild_error
from .names import reference, resolve
from .process import WorkerProcess, spawn, stop

__all__ = ["ordered_map", "default_workers"]

T = TypeVar("T")
R = TypeVar("R")

WORKER_MODULE = "fastload.workers.map_worker"
_IN_FLIGHT_PER_WORKER = 2  # one chunk working, one queued: the worker never waits for the parent
_ADVICE = "re-run, or use fewer workers (--workers) if memory is short"


def default_workers() -> int:
    """The cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class _Worker:
    process: WorkerProcess
    in_flight: dict[int, Sequence[Any]] = field(default_factory=dict)  # seq -> chunk, FIFO


class _Pool:
    def __init__(self, function: str, context: Any, workers: int,
                 describe: Callable[[Sequence[Any]], str]) -> None:
        self.describe = describe
        self.workers: list[_Worker] = []
        try:
            for _ in range(workers):
                worker = _Worker(spawn(WORKER_MODULE, name="worker process {pid}"))
                self.workers.append(worker)
                self._send(worker, list(sys.path))  # where the worker finds ``function``'s module
                self._send(worker, {"function": function, "context": context})
        except BaseException:
            self.close(graceful=False)
            raise

    def _dead(self, worker: _Worker) -> Exception:
        doing = (f"processing {self.describe(next(iter(worker.in_flight.values())))}"
                 if worker.in_flight else "idle")
        return worker.process.died(doing, _ADVICE)

    def _send(self, worker: _Worker, value: Any) -> None:
        try:
            send_message(worker.process.inp, value)
        except OSError:  # broken pipe: the worker is gone
            raise self._dead(worker) from None

    def _receive(self, worker: _Worker, done: dict[int, Any]) -> None:
        try:
            ok, reply = read_message(worker.process.out)
        except OSError:
            ok = False
        if not ok:
            raise self._dead(worker) from None
        chunk = worker.in_flight.pop(reply["seq"])
        if "error" in reply:
            where = f"{worker.process.name} processing {self.describe(chunk)}"
            raise rebuild_error(reply["error"], where)
        done[reply["seq"]] = reply["value"]

    def ordered(self, chunks: list[Sequence[Any]]) -> Iterator[Any]:
        """Results of every chunk, in chunk order; at most ``4 * workers`` chunks ahead."""
        window = 4 * len(self.workers)
        next_send = next_out = 0
        done: dict[int, Any] = {}
        while next_out < len(chunks):
            for worker in self.workers:
                while (len(worker.in_flight) < _IN_FLIGHT_PER_WORKER and next_send < len(chunks)
                       and next_send < next_out + window):
                    worker.in_flight[next_send] = chunks[next_send]
                    self._send(worker, {"seq": next_send, "chunk": chunks[next_send]})
                    next_send += 1
            if next_out in done:
                yield done.pop(next_out)
                next_out += 1
                continue
            self._wait(done)

    def _wait(self, done: dict[int, Any]) -> None:
        """Take every reply that is ready; a worker that died closes its pipe, which wakes this
        up too."""
        by_fd = {worker.process.out: worker for worker in self.workers}
        ready, _, _ = select.select(list(by_fd), [], [])
        for fd in ready:
            self._receive(by_fd[fd], done)

    def close(self, graceful: bool) -> None:
        stop([worker.process for worker in self.workers], terminate=not graceful,
             timeout=10 if graceful else 2)


def ordered_map(
    function: str | Callable[[Sequence[T], Any], list[R]],
    items: Sequence[T],
    context: Any,
    workers: int,
    chunk_size: int = 16,
    describe: Callable[[Sequence[T]], str] = lambda chunk: f"{len(chunk)} items",
) -> Iterable[R]:
    """Yield the items of ``function(chunk, context)`` for every chunk of ``items``, in order.

    ``function`` is named ``"module:qualname"`` (a module-level function may be passed itself:
    it is sent by that name). Items, ``context`` (sent to each worker once) and results may
    hold what ``fastload.workers.codec`` carries: JSON types, tuples, bytes, NumPy arrays,
    fastload dataclasses. With one worker it runs in this process. A worker that dies raises
    WorkerDiedError naming it, its signal or exit status, and ``describe(chunk)`` of its chunk;
    an exception raised by ``function`` is raised here (``fastload.workers.failures``).
    """
    name = function if isinstance(function, str) else reference(function)
    chunks = list(_chunks(items, chunk_size))
    if workers <= 1 or len(chunks) <= 1:
        run = resolve(name)
        for chunk in chunks:
            yield from run(chunk, context)
        return
    pool = _Pool(name, context, min(workers, len(chunks)), describe)
    graceful = False
    try:
        for results in pool.ordered(chunks):
            yield from results
        graceful = True
    finally:
        pool.close(graceful)
