"""Worker processes: fresh interpreters on two pipes, and the report of one that died.

A worker is ``python -m MODULE ARGS`` (never a fork, and never multiprocessing's spawn, which
re-imports the caller's script: a script that packs at top level, with no ``__main__`` guard,
works, and nothing of the parent, threads, locks or CUDA, is inherited). It reads its stdin
and answers on its stdout; its end of each pipe is in no other process, so when it dies the
parent's read ends at once: a dead worker is reported, with how it died and what it held,
never waited for.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import WorkerDiedError

__all__ = ["WorkerProcess", "spawn", "stop", "worker_stdio"]


@dataclass
class WorkerProcess:
    """A started worker, seen from its parent.

    Attributes:
        name: how errors name it, e.g. ``"worker process 1234"``.
        proc: the process.
        inp: the parent's end of the worker's stdin (requests).
        out: the parent's end of the worker's stdout (replies).
    """

    name: str
    proc: subprocess.Popen
    inp: int
    out: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def died(self, doing: str, advice: str) -> WorkerDiedError:
        """The error for this worker's death while ``doing`` (it closed its pipe): its name,
        how it died and what to do. Waits (briefly) for its exit status."""
        try:
            how = _how(self.proc.wait(timeout=5))
        except subprocess.TimeoutExpired:  # its pipe broke but it lives on: stop it
            self.proc.kill()
            self.proc.wait()
            how = ("closed its pipe", "it stopped answering and was killed")
        return WorkerDiedError(f"{self.name} {how[0]} while {doing} ({how[1]}); {advice}")


def _how(returncode: int) -> tuple[str, str]:
    """What happened to a worker that exited with ``returncode``, and its likely cause."""
    if returncode >= 0:
        return f"exited with status {returncode}", "its error is printed above"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    if returncode == -signal.SIGKILL:
        return f"was killed by {name}", "killed, or out of memory: see dmesg"
    return f"was killed by {name}", "a crash, or killed"


def spawn(module: str, args: Sequence[str] = (), *, name: str, pass_fds: Iterable[int] = ()) -> WorkerProcess:
    """Start ``python -m module *args``; ``{pid}`` in ``name`` becomes its process id."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, pass_fds=tuple(pass_fds), close_fds=True)
    assert proc.stdin is not None and proc.stdout is not None  # both are PIPE
    worker = WorkerProcess(name.replace("{pid}", str(proc.pid)), proc, os.dup(proc.stdin.fileno()), os.dup(proc.stdout.fileno()))
    proc.stdin.close()  # plain fds from here: the messages are read and written with os.read/os.write
    proc.stdout.close()
    return worker


def stop(workers: Iterable[WorkerProcess], *, terminate: bool = False, timeout: float = 5.0) -> None:
    """Close the workers' pipes (a worker exits at the end of its stdin), wait ``timeout``
    seconds for each, then kill it. ``terminate``: signal them first instead of letting them
    finish what they hold."""
    workers = list(workers)
    for worker in workers:
        if terminate and worker.proc.poll() is None:
            worker.proc.terminate()
        for fd in (worker.inp, worker.out):
            try:
                os.close(fd)
            except OSError:  # closed already
                pass
    for worker in workers:
        try:
            worker.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()


def worker_stdio(*, die_with_parent: bool) -> tuple[int, int]:
    """In a worker: ``(requests fd, replies fd)``. Anything printed goes to stderr, never into
    the replies; Ctrl-C is the parent's to handle (it stops its workers).

    Args:
        die_with_parent: Linux: get SIGTERM when the parent thread that started this worker
            exits, even while busy (the end of stdin covers idle times).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if die_with_parent and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl: the end of stdin still ends the worker
            pass
    out = os.dup(1)
    os.dup2(2, 1)
    return 0, out
