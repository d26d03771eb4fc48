"""How many of the host stage's threads take each batch: as many as its share of the CPU needs.

Why: on the CPU, DALI's threads (reading, decoding) and the host stage's threads (the ops) share
the cores, and the host stage's threads take turns at the GIL. With as many host threads as DALI's,
most op lists kept more threads runnable than there were cores, and a thread the scheduler stops
while it holds the GIL holds it until it runs again: every other thread that needs the GIL waits
that long. The train preset's host stage is ~25% of the CPU per image (a 224 px resize against a
JPEG decode): one host thread kept up with two of DALI's on 2 cores, and the GIL held per image
fell from ~90 to ~73 us (``benchmarks/run.py``, LMDB; RESULTS.md section 23). A fixed count would
starve op lists that cost more than the decode, and many-core machines. So the split is measured,
every ``WINDOW`` batches: the CPU time of the host stage's threads against that of DALI's threads
over the same batches (both from ``/proc/self/task/<id>/schedstat``: the process's whole CPU time
would also count a training step on the CPU), and each batch goes to ``round(threads x share x
MARGIN)`` threads, at least one.

Why ``/proc`` and not ``time.thread_time()`` around each chunk: that system call updates the
scheduler's account of the calling thread, and where its time slice is spent the scheduler stops
it right there, on the way out of the call, while it holds the GIL: two calls a chunk raised the
GIL held per image by ~25 us on 2 cores (ColorJitter list, one host thread, 105 -> 130 us).
Reading another thread's ``schedstat`` updates nothing.

DALI's threads are those named ``[DALI]...`` that its pipeline started (new since just before it was
defined, looked for once it has run a batch; a pipeline built meanwhile counts too, its threads idle
while this one runs). Where ``/proc`` is not there, every thread takes a batch.

DALI's threads also run as background work (``background``: ``SCHED_BATCH``, ``DALI_NICE`` steps
nicer), for the same reason: they never take the GIL, the host threads, the Loader's thread and a
training step do, and where they all want the cores a GIL holder stopped for a DALI thread stops
every thread that waits for the GIL. Background threads do not preempt others when they wake and
yield the core more readily; where cores are free they run as before. 2 cores, train preset, LMDB,
in one process, windows alternated: GIL held per image 73-80 -> 55-66 us at the same img/s; eval
93 -> 80-84 (RESULTS.md section 24). Lowering a thread's priority needs no privilege; where it is
refused, or not Linux, the threads stay as they are.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["ThreadShare", "background", "new_threads_clock", "processes_cpu_clock", "thread_names", "threads_cpu_clock",
           "threads_for"]

MARGIN = 1.2  # threads beyond the measured share: the host stage's cost varies from batch to batch
WINDOW = 8  # batches per estimate
DALI_NICE = 5  # how much nicer DALI's threads run than the process (0: as they are; benchmarks compare)

Clock = Callable[[], "float | None"]


def thread_names() -> dict[int, str]:
    """This process's threads: ``{thread id: name}`` (empty where ``/proc`` is not there)."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    names = {}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                names[int(tid)] = comm.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
    return names


def threads_cpu_clock(tids: Sequence[int]) -> Clock:
    """A clock of the CPU seconds that the threads ``tids`` have run (read at each call: the list
    may grow; threads that ended count no more); None where none of them can be read."""
    return _schedstat_clock(tids, "/proc/self/task/{}/schedstat")


def _schedstat_clock(items: Sequence[Any], pattern: str = "{}") -> Clock:
    """The CPU seconds in the ``schedstat`` files ``pattern.format(item)`` of ``items``."""

    def seconds() -> float | None:
        total, read = 0, False
        for item in list(items):
            try:
                with open(pattern.format(item), "rb") as stat:
                    total += int(stat.read().split(maxsplit=1)[0])  # nanoseconds on a CPU
                read = True
            except (OSError, ValueError, IndexError):
                continue
        return total / 1e9 if read else None

    return seconds


def processes_cpu_clock(pids: Sequence[int]) -> Clock:
    """A clock of the CPU seconds that the single-threaded processes ``pids`` have run (their main
    threads' ``schedstat``); None where none of them can be read."""
    return _schedstat_clock([f"/proc/{pid}/schedstat" for pid in pids])


def new_threads_clock(before: Iterable[int], prefix: str,
                      on_found: Callable[[Sequence[int]], None] | None = None) -> Clock:
    """A clock of the CPU seconds of the threads named ``prefix...`` that are not in ``before``,
    looked for at its first reading (then handed to ``on_found``): a DALI pipeline starts some
    threads when it is built, others when it first runs (with one thread, its executor does the
    work: it was not there after the build)."""
    known, found = set(before), []
    clock = threads_cpu_clock(found)

    def seconds() -> float | None:
        if not found:
            found.extend(tid for tid, name in thread_names().items() if tid not in known and name.startswith(prefix))
            if found and on_found is not None:
                on_found(found)
        return clock()

    return seconds


def background(tids: Sequence[int], nice: int | None = None) -> None:
    """Run the threads ``tids`` of this process as background work: ``SCHED_BATCH`` and ``nice``
    (default ``DALI_NICE``) steps nicer than the process; nothing where ``nice`` is 0, where the OS
    lacks these calls or refuses (a thread that ended meanwhile)."""
    steps = DALI_NICE if nice is None else nice
    if steps <= 0 or not hasattr(os, "sched_setscheduler"):
        return
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)
    except OSError:  # a sandbox without the call: the threads stay as they are
        return
    for tid in tids:
        try:
            os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, tid, min(19, base + steps))
        except OSError:
            continue


def threads_for(threads: int, host_seconds: float, other_seconds: float) -> int:
    """Of ``threads``, how many keep the host stage up when it takes ``host_seconds`` of CPU while
    the threads it shares the cores with take ``other_seconds``: its share of ``threads`` cores,
    times ``MARGIN``, rounded, at least one (all of them when nothing was measured)."""
    if host_seconds <= 0 or other_seconds < 0:
        return threads
    share = host_seconds / (host_seconds + other_seconds)
    return max(1, min(threads, round(threads * share * MARGIN)))


class ThreadShare:
    """The host stage's share of the CPU as a count of threads (``active``), measured every
    ``WINDOW`` batches.

    Args:
        threads: the host stage's threads (at most this many take a batch).
        host: a clock of the host stage's threads' CPU seconds.
        others: a clock of the CPU seconds of the threads it shares the cores with (DALI's).
            Without both, every thread takes every batch.
    """

    def __init__(self, threads: int, host: Clock | None = None, others: Clock | None = None) -> None:
        self.threads = self.active = max(1, threads)
        self._clocks = (host, others) if host is not None and others is not None else None
        self._batches = 0
        self._since: tuple[float, float] | None = None  # both clocks at the window's start

    def batch_done(self) -> None:
        """The host stage finished a batch (the first is not counted: start-up work on both sides)."""
        if self._clocks is None:
            return
        self._batches += 1
        if self._batches % WINDOW != 1:
            return
        host, others = (clock() for clock in self._clocks)
        if host is None or others is None:  # nothing to read: every thread, as without clocks
            self._clocks, self.active = None, self.threads
            return
        if self._since is not None:
            self.active = threads_for(self.threads, host - self._since[0], others - self._since[1])
        self._since = (host, others)
