"""An ordered, bounded parallel map over worker processes that never hangs on a dead worker.

Each worker has its own pipe, so the parent always knows which chunk each worker holds: when
one dies (killed, out of memory) the error names the worker, how it died and the chunk it was
processing, instead of the "a process in the pool terminated abruptly" a shared pool gives.

Workers are fresh interpreters (``python -m fastload.pool_worker``), like the Loader's feed
workers: unlike multiprocessing's spawn, they never re-import the caller's script, so a script
that calls ``fastload.pack`` at top level, without an ``if __name__ == "__main__":`` guard,
works; and nothing of the parent (threads, locks, CUDA) is inherited. Tasks and results cross
the pipe as multiprocessing messages between these trusted processes only; stores hold no pickle.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from .errors import WorkerDiedError

__all__ = ["ordered_map", "default_workers"]

T = TypeVar("T")
R = TypeVar("R")

_IN_FLIGHT_PER_WORKER = 2  # one chunk working, one queued: the worker never waits for the parent


def default_workers() -> int:
    """The cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- worker side --------------------------------------------------------------------------


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a RuntimeError with its traceback."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, round-tripped in-process
        return exc
    except Exception:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return RuntimeError(f"a worker raised an exception that cannot be sent back:\n{text}")


def worker_main(conn: Connection) -> None:
    """Serve one parent (``fastload.pool_worker``): its import path, then ``(fn, context)``,
    then chunks until None."""
    import cv2

    cv2.setNumThreads(1)  # one OpenCV thread per worker process: the processes are the parallelism
    try:
        sys.path[:] = json.loads(conn.recv_bytes())  # where the parent finds ``fn``'s module
        fn, context = conn.recv()
        while True:
            task = conn.recv()
            if task is None:
                return
            seq, chunk = task
            try:
                reply = (seq, True, fn(chunk, context))
            except Exception as exc:
                reply = (seq, False, _portable(exc))
            conn.send(reply)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return  # the parent went away or was interrupted: nothing left to do


# --- parent side --------------------------------------------------------------------------


@dataclass
class _Worker:
    process: subprocess.Popen
    conn: Connection
    in_flight: dict[int, Sequence[Any]] = field(default_factory=dict)  # seq -> chunk, FIFO


def _how_it_died(process: subprocess.Popen) -> str:
    code = process.returncode
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class _Pool:
    def __init__(self, fn: Callable, context: Any, workers: int,
                 describe: Callable[[Sequence[Any]], str]) -> None:
        self.describe = describe
        self.workers: list[_Worker] = []
        path = json.dumps(sys.path).encode("utf-8")
        try:
            for _ in range(workers):
                parent_end, child_end = Pipe(duplex=True)
                fd = child_end.fileno()
                process = subprocess.Popen([sys.executable, "-m", "fastload.pool_worker", str(fd)],
                                           pass_fds=[fd], close_fds=True)
                child_end.close()
                worker = _Worker(process, parent_end)
                self.workers.append(worker)
                try:
                    parent_end.send_bytes(path)
                    parent_end.send((fn, context))
                except OSError:
                    raise self._dead(worker) from None
        except BaseException:
            self.close(graceful=False)
            raise

    def _dead(self, worker: _Worker) -> WorkerDiedError:
        try:
            worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its pipe broke but it lives on: stop it
            worker.process.kill()
            worker.process.wait()
        what = (f"while processing {self.describe(next(iter(worker.in_flight.values())))}"
                if worker.in_flight else "while idle")
        return WorkerDiedError(
            f"worker process {worker.process.pid} {_how_it_died(worker.process)} {what} "
            "(killed, out of memory, or a failure printed above); re-run, or use fewer workers "
            "(--workers) if memory is short"
        )

    def _receive(self, worker: _Worker, done: dict[int, Any]) -> None:
        try:
            seq, ok, value = worker.conn.recv()
        except (EOFError, ConnectionError, OSError):
            raise self._dead(worker) from None
        del worker.in_flight[seq]
        if not ok:
            raise value
        done[seq] = value

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
                    try:
                        worker.conn.send((next_send, chunks[next_send]))
                    except OSError:  # broken pipe: the worker is gone
                        raise self._dead(worker) from None
                    next_send += 1
            if next_out in done:
                yield done.pop(next_out)
                next_out += 1
                continue
            self._wait(done)

    def _wait(self, done: dict[int, Any]) -> None:
        """Take every reply that is ready; a worker that died closes its pipe, which wakes this
        up too (its end of the pipe is in no other process)."""
        by_conn = {worker.conn: worker for worker in self.workers}
        for conn in wait(list(by_conn)):
            self._receive(by_conn[conn], done)

    def close(self, graceful: bool) -> None:
        for worker in self.workers:
            if worker.process.poll() is not None:
                continue
            if graceful:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            else:
                worker.process.terminate()
        for worker in self.workers:
            try:
                worker.process.wait(timeout=10 if graceful else 2)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.conn.close()


def ordered_map(
    fn: Callable[[Sequence[T], Any], list[R]],
    items: Sequence[T],
    context: Any,
    workers: int,
    chunk_size: int = 16,
    describe: Callable[[Sequence[T]], str] = lambda chunk: f"{len(chunk)} items",
) -> Iterable[R]:
    """Yield the items of ``fn(chunk, context)`` for every chunk of ``items``, in input order.

    ``fn`` must be a module-level function (it crosses a process boundary); ``context`` is sent
    to each worker once. With one worker it runs in this process. A worker that dies raises
    WorkerDiedError naming it, its signal or exit status, and ``describe(chunk)`` of its chunk;
    an exception raised by ``fn`` is re-raised here.
    """
    chunks = list(_chunks(items, chunk_size))
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield from fn(chunk, context)
        return
    pool = _Pool(fn, context, min(workers, len(chunks)), describe)
    graceful = False
    try:
        for results in pool.ordered(chunks):
            yield from results
        graceful = True
    finally:
        pool.close(graceful)
