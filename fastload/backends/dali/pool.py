"""The feed's worker processes and the shared-memory slots they fill, seen from the Loader.

Each slot is an anonymous memfd: nothing appears in ``/dev/shm`` and nothing outlives the
processes that map it, however they end. The Loader's thread hands out a batch (a few bytes of
record indices), and later takes a filled slot back as NumPy views: O(1) Python work per batch
besides one small view per sample. A worker that dies is named, with how it died, the moment
its pipe closes: never a hang.
"""

from __future__ import annotations

import os
import select
import weakref
from dataclasses import dataclass, field

import numpy as np

from ...errors import WorkerDiedError
from ...workers.channel import read_exact, read_message, send_message, write_all
from ...workers.failures import rebuild_error
from ...workers.process import WorkerProcess, spawn
from ...workers.slots import Slot, close_slots
from .feed import FeedSpec
from .protocol import FAILED, OK, READY, REQUEST, RESPONSE

__all__ = ["FeedPool"]

_START_TIMEOUT_S = 120.0
_WORKER_MODULE = "fastload.backends.dali.worker"
_ADVICE = "start a new pass over the Loader to restart the feed"


@dataclass
class _Worker:
    process: WorkerProcess
    inp: int  # the worker's stdin (requests): process.inp, kept here for the per-batch path
    out: int  # the worker's stdout (responses)
    busy: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (epoch, first record)


class FeedPool:
    """``workers`` feed processes sharing ``slots`` shared-memory slots.

    Args:
        spec: what the workers read and how (sent to them as JSON).
        workers: processes to start.
        slots: slots to fill; each holds one batch until ``release``.
        name: how errors name the data (the store's path).
    """

    def __init__(self, spec: FeedSpec, workers: int, slots: int, name: str) -> None:
        self.name = name
        self._slots = [Slot(f"fastload-feed-{i}") for i in range(slots)]
        self._free = list(range(slots))
        self._done: dict[int, tuple[int, int]] = {}  # seq -> (slot, bytes used)
        self._discarded: set[int] = set()
        self._workers: list[_Worker] = []
        processes: list[WorkerProcess] = []  # filled as they start: the finalizer stops those there are
        self._finalizer = weakref.finalize(self, close_slots, os.getpid(), processes, self._slots)
        fds = [slot.fd for slot in self._slots]
        for index in range(max(1, workers)):
            process = spawn(_WORKER_MODULE, ["--slots", ",".join(map(str, fds))], pass_fds=fds,
                            name=f"fastload feed worker {index} (pid {{pid}}) reading {name}")
            self._workers.append(_Worker(process, process.inp, process.out))
            processes.append(process)
        spec_json = spec.to_json()
        for worker in self._workers:
            try:
                send_message(worker.inp, spec_json)
            except BrokenPipeError:
                raise self._died(worker, "starting") from None
        for worker in self._workers:
            self._await_ready(worker)

    # --- lifecycle ------------------------------------------------------------------------------
    def _await_ready(self, worker: _Worker) -> None:
        ready, _, _ = select.select([worker.out], [], [], _START_TIMEOUT_S)
        if not ready:
            raise WorkerDiedError(f"{worker.process.name} did not start within {_START_TIMEOUT_S:.0f} s")
        status, _, _, _ = self._read_header(worker, "starting")
        if status == FAILED:
            raise self._failure(worker, "opening the store")
        if status != READY:
            raise WorkerDiedError(f"{worker.process.name} answered {status} instead of ready")

    def close(self) -> None:
        """Stop the workers and free the slots (also done when the pool is collected)."""
        self._finalizer()

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    # --- slots ------------------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return len(self._free)

    def view(self, slot: int) -> memoryview:
        """The parent's view of ``slot`` (valid until the slot is reserved larger)."""
        return self._slots[slot].view()

    def release(self, slot: int) -> None:
        """``slot`` may be filled again (DALI no longer reads it)."""
        self._free.append(slot)

    # --- batches ------------------------------------------------------------------------------------
    def submit(self, seq: int, epoch: int, indices: np.ndarray, size: int) -> None:
        """Ask a worker to fill a free slot with records ``indices`` of ``epoch`` (``size``
        bytes: the exact layout size). Call only when ``free_slots`` > 0."""
        slot = self._free.pop()
        capacity = self._slots[slot].reserve(size)
        worker = min(self._workers, key=lambda w: len(w.busy))
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        worker.busy[seq] = (epoch, int(indices[0]) if len(indices) else -1)
        try:
            write_all(worker.inp, REQUEST.pack(slot, len(indices), seq, epoch, capacity) + indices.tobytes())
        except BrokenPipeError:
            raise self._died(worker, self._doing(worker)) from None

    def wait(self, seq: int) -> tuple[int, int]:
        """Block until batch ``seq`` is filled; return ``(slot, bytes used)``.

        Raises:
            WorkerDiedError: its worker died. Errors raised while reading (a corrupt record)
                are raised here as they were raised in the worker.
        """
        while seq not in self._done:
            waiting = {w.out: w for w in self._workers if w.busy}
            if not waiting:
                raise RuntimeError(f"batch {seq} was never submitted to the feed")
            ready, _, _ = select.select(list(waiting), [], [], 5.0)
            for fd in ready:
                self._receive(waiting[fd])
        return self._done.pop(seq)

    def discard(self, seq: int) -> None:
        """Batch ``seq`` is no longer wanted: its slot is freed as soon as it is filled."""
        if seq in self._done:
            self.release(self._done.pop(seq)[0])
        else:
            self._discarded.add(seq)

    # --- internals ------------------------------------------------------------------------------
    @staticmethod
    def _doing(worker: _Worker) -> str:
        return "reading " + (", ".join(f"epoch {e} batch from record {r}" for e, r in worker.busy.values())
                             or "nothing")

    def _died(self, worker: _Worker, doing: str) -> WorkerDiedError:
        return worker.process.died(doing, _ADVICE)

    def _read_header(self, worker: _Worker, doing: str | None = None) -> tuple[int, int, int, int]:
        """The next response header; ``doing`` (default: the batches it holds) names what a
        worker that died was doing, composed only then: nothing extra per batch."""
        head = read_exact(worker.out, RESPONSE.size)
        if head is None:
            raise self._died(worker, doing or self._doing(worker))
        return RESPONSE.unpack(head)

    def _failure(self, worker: _Worker, doing: str) -> Exception:
        ok, report = read_message(worker.out)
        if not ok:
            return self._died(worker, doing)
        return rebuild_error(report, f"{worker.process.name} {doing}")

    def _receive(self, worker: _Worker) -> None:
        status, slot, seq, value = self._read_header(worker)
        worker.busy.pop(seq, None)
        if status == FAILED:
            self.release(slot)
            error = self._failure(worker, f"on batch {seq}")
            if seq not in self._discarded:  # a batch nobody waits for fails quietly
                raise error
            self._discarded.discard(seq)
            return
        if status != OK:
            raise WorkerDiedError(f"{worker.process.name} sent an unknown status {status}")
        if seq in self._discarded:
            self._discarded.discard(seq)
            self.release(slot)
        else:
            self._done[seq] = (slot, value)
