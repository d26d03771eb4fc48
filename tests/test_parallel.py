"""fastload.workers.ordered_map: order, bounded look-ahead, errors, and dead workers."""

from __future__ import annotations

import os
import signal
import time

import pytest

from fastload.errors import WorkerDiedError
from fastload.workers import ordered_map


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


def _pool_workers() -> list[int]:
    """Pids of this process's live pool workers (from /proc: no psutil needed)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().rsplit(b")", 1)[1].split()
        except (OSError, ValueError):
            continue
        if b"fastload.workers.map_worker" in cmd and int(stat[1]) == os.getpid() and stat[0] != b"Z":
            found.append(int(pid))
    return found


def test_consumer_stopping_early_shuts_workers_down():
    results = ordered_map(square_slowly, list(range(100)), 0.0, 2, chunk_size=2)
    assert next(iter(results)) == 0
    assert len(_pool_workers()) == 2
    results.close()  # GeneratorExit: the pool is torn down, no process left behind
    assert not _pool_workers()


def test_a_script_without_a_main_guard_can_pack(tmp_path):
    """Workers are fresh interpreters: they never re-run the caller's script (multiprocessing's
    spawn would, and its bootstrapping check would stop the unguarded top-level call)."""
    import subprocess
    import sys

    script = tmp_path / "pack_it.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "import fastload\n"
        "from imagefiles import jpeg, write\n"
        "for i in range(40):\n"
        "    write(f'data/cls/{i:02d}.jpg', jpeg(seed=i))\n"
        "summary = fastload.pack('data', 'data.lmdb', options=fastload.PackOptions(workers=2, progress=False))\n"
        "print(summary.packed)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "40"


@pytest.mark.parametrize("modules", [("fastload.workers.map_worker", "fastload.pack", "fastload.inspect"),
                                     ("fastload.backends.dali.worker", "fastload.backends.dali.feed", "fastload.ops.config")])
def test_worker_processes_do_not_import_torch(modules):
    """Every Loader and every pack starts fresh worker interpreters: importing torch there
    costs ~3 s and ~600 MB each (it once slipped in through one import and slowed the tests 3x)."""
    import subprocess
    import sys

    code = f"import sys; import {', '.join(modules)}; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
