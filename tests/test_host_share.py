"""The host stage's share of the threads (fastload/backends/dali/share.py): the arithmetic, the
clocks it reads (against the thread's own CPU clock), DALI's threads as background work, and a DALI
CPU loader that gives each batch fewer threads with the same pixels."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

import fastload
from fastload import ops
from fastload.backends.dali import share
from fastload.backends.dali.share import (
    WINDOW,
    ThreadShare,
    thread_names,
    threads_cpu_clock,
    threads_for,
)
from fastload.loader import dali_available

proc = pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="no /proc")


@pytest.mark.parametrize("threads,host,others,expected", [
    (2, 1.0, 3.0, 1),  # a quarter of the CPU: one of two threads
    (16, 1.0, 3.0, 5),  # 16 x 0.25 x 1.2 = 4.8
    (2, 3.0, 1.0, 2),  # more than the threads there are: all of them
    (4, 0.0, 3.0, 4),  # nothing measured on the host stage: all of them
    (8, 1e-6, 10.0, 1),  # at least one
])
def test_threads_for_gives_the_share_of_the_threads_with_a_margin(threads, host, others, expected):
    assert threads_for(threads, host, others) == expected


class _Counter:
    """A clock the test advances."""

    def __init__(self) -> None:
        self.seconds: float | None = 0.0

    def __call__(self) -> float | None:
        return self.seconds


def _batches(share_: ThreadShare, host: _Counter, others: _Counter, count: int, host_s: float, others_s: float) -> None:
    for _ in range(count):
        host.seconds += host_s  # type: ignore[operator]
        others.seconds += others_s  # type: ignore[operator]
        share_.batch_done()


def test_the_share_is_measured_over_a_window_of_batches_after_the_first():
    host, others = _Counter(), _Counter()
    share_ = ThreadShare(16, host, others)
    _batches(share_, host, others, WINDOW, 1.0, 3.0)
    assert share_.active == 16  # the first batch starts the window: not measured yet
    _batches(share_, host, others, 1, 1.0, 3.0)
    assert share_.active == 5
    _batches(share_, host, others, WINDOW, 9.0, 1.0)  # the host stage grew costlier: more threads
    assert share_.active == 16


def test_without_both_clocks_every_thread_takes_every_batch():
    host, others = _Counter(), _Counter()
    for share_ in (ThreadShare(4), ThreadShare(4, host, None)):
        _batches(share_, host, others, 3 * WINDOW, 1.0, 9.0)
        assert share_.active == 4
    others.seconds = None  # a clock that cannot be read (no /proc): all threads from then on
    share_ = ThreadShare(4, host, others)
    _batches(share_, host, _Counter(), 3 * WINDOW, 1.0, 0.0)
    assert share_.active == 4


def _named_thread(name: bytes, cpu_seconds: float, parked: threading.Event) -> tuple[threading.Thread, dict]:
    """A thread that names itself (the OS's name: Python 3.11 sets none), runs ``cpu_seconds`` of
    CPU, notes its id and its own CPU clock, then waits on ``parked``."""
    import ctypes

    seen: dict = {}
    done = threading.Event()

    def run() -> None:
        seen["tid"] = threading.get_native_id()
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
        total = 0
        while time.thread_time() < cpu_seconds:
            total += sum(range(1000))
        seen["own"] = time.thread_time()
        done.set()
        parked.wait()

    thread = threading.Thread(target=run)
    thread.start()
    done.wait()
    return thread, seen


@proc
def test_the_cpu_clock_of_another_thread_agrees_with_its_own():
    """``/proc/self/task/<id>/schedstat`` (read from here) against ``time.thread_time()`` (read by
    the thread itself, then parked on an event, so neither moves in between)."""
    parked = threading.Event()
    thread, seen = _named_thread(b"fl-test-burn", 0.05, parked)  # 50 ms of CPU, however long that takes
    clock = threads_cpu_clock([seen["tid"]])
    try:
        assert seen["tid"] in thread_names()
        assert clock() == pytest.approx(seen["own"], abs=0.005)
    finally:
        parked.set()
        thread.join()
    assert threads_cpu_clock([-1])() is None  # no such thread: nothing to read


@proc
def test_the_clock_of_new_threads_counts_those_with_the_name_started_after_the_snapshot():
    parked = threading.Event()
    early, _ = _named_thread(b"[X]early", 0.01, parked)
    clock = share.new_threads_clock(thread_names(), "[X]")
    try:
        other, _ = _named_thread(b"other", 0.02, parked)
        late, seen = _named_thread(b"[X]late", 0.03, parked)
        assert clock() == pytest.approx(seen["own"], abs=0.005)  # the late one alone
    finally:
        parked.set()
        for thread in (early, other, late):
            thread.join()


linux_scheduling = pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="no per-thread scheduling calls")


@proc
@linux_scheduling
def test_background_threads_run_as_batch_work_a_few_steps_nicer():
    parked = threading.Event()
    quiet, seen_quiet = _named_thread(b"fl-test-quiet", 0.0, parked)
    left, seen_left = _named_thread(b"fl-test-left", 0.0, parked)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        share.background([seen_quiet["tid"], -1])  # a thread that is gone is passed over
        assert os.sched_getscheduler(seen_quiet["tid"]) == os.SCHED_BATCH
        assert os.getpriority(os.PRIO_PROCESS, seen_quiet["tid"]) == min(19, base + share.DALI_NICE)
        share.background([seen_left["tid"]], nice=0)  # 0: left as it is
        assert os.sched_getscheduler(seen_left["tid"]) == os.sched_getscheduler(0)
        assert os.getpriority(os.PRIO_PROCESS, seen_left["tid"]) == base
    finally:
        parked.set()
        quiet.join()
        left.join()


@proc
@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_a_host_stage_on_fewer_threads_gives_the_same_batches(small_lmdb, monkeypatch):
    """The CPU host stage clocks DALI's own threads (and runs them as background work), and a batch
    taken by one of its threads is the batch all of them make."""
    augment = [ops.RandomResizedCrop(24), ops.Flip(), ops.ColorJitter(0.4, 0.4, 0.4, 0.1), ops.Normalize()]

    def run() -> tuple[torch.Tensor, list[int]]:
        before = thread_names()
        loader = fastload.Loader(small_lmdb, augment=augment, backend="dali", device="cpu", num_threads=2,
                                 batch_size=2, seed=3, shuffle=True)
        batches, active = [], []
        for images, _ in loader:
            batches.append(images)
            active.append(loader._get_backend()._engines[0].host.share.active)
        host = loader._get_backend()._engines[0].host
        assert host.share._clocks is not None and host.share._clocks[1]() > 0  # DALI's threads ran
        if hasattr(os, "sched_getscheduler"):  # and ran as background work
            dali = [tid for tid, name in thread_names().items() if tid not in before and name.startswith("[DALI]")]
            assert dali and all(os.sched_getscheduler(tid) == os.SCHED_BATCH for tid in dali)
        loader.close()
        return torch.cat(batches), active

    monkeypatch.setattr(share, "MARGIN", 100.0)  # every share: both threads
    everyone, active = run()
    assert set(active) == {2}
    monkeypatch.setattr(share, "MARGIN", 0.0)  # every share: one thread, from the first window on
    alone, active = run()
    assert len(active) > WINDOW + 1 and active[:WINDOW] == [2] * WINDOW and set(active[WINDOW:]) == {1}
    assert torch.equal(alone, everyone)


def test_the_host_stage_is_collected_while_its_threads_wait():
    """Its threads know only the list of their ids: a stage nobody holds frees its output batches."""
    import gc
    import weakref

    import numpy as np

    from fastload.backends.dali.host import HostFinish
    from fastload.backends.dali.params import ParamLayout
    from fastload.output import OutputSpec

    head = [ops.RandomResizedCrop(8), ops.Flip()]
    layout = ParamLayout(head)
    host = HostFinish(head, layout, cut=False, threads=2,
                      output=OutputSpec(dtype="float32", layout="NCHW", channels=3, pixel_dtype="uint8"))
    images = [np.full((12, 14, 3), i, np.uint8) for i in range(4)]
    batch = host(images, np.stack([layout.draw(0, 0, i, 12, 14) for i in range(4)]))
    assert batch.shape == (4, 3, 8, 8) and len(host._tids) >= 1
    pool, stage = host._pool, weakref.ref(host)
    del host, batch
    gc.collect()
    try:
        assert stage() is None
    finally:
        pool.close()
