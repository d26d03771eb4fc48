"""A feed worker process: ``python -m fastload.backends.dali.worker --slots FD,FD,...``.

Started by ``FeedPool`` as a fresh interpreter (never a fork: safe however CUDA or threads stand
in the parent, and it never re-runs the user's ``__main__``). It reads requests on stdin, fills
shared-memory slots (memfds inherited from the parent) and answers on stdout. It exits when its
stdin closes, which is also what happens when the parent dies.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import signal
import sys

import numpy as np

from .protocol import FAILED, OK, READY, REQUEST, RESPONSE, error_report, read_exact, write_all

__all__ = ["main"]


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies, even while busy (stdin EOF covers idle times)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl: stdin EOF still ends the worker
            pass


def _serve(reader: object, fds: list[int], inp: int, out: int) -> None:
    maps: dict[int, mmap.mmap] = {}
    while True:
        head = read_exact(inp, REQUEST.size)
        if head is None:
            return
        slot, count, seq, epoch, capacity = REQUEST.unpack(head)
        raw = read_exact(inp, 8 * count)
        if raw is None:
            return
        try:
            if slot not in maps or len(maps[slot]) < capacity:
                maps[slot] = mmap.mmap(fds[slot], capacity)
            used = reader.fill(memoryview(maps[slot])[:capacity], epoch, np.frombuffer(raw, np.int64))  # type: ignore[attr-defined]
        except Exception as exc:
            report = error_report(exc)
            write_all(out, RESPONSE.pack(FAILED, slot, seq, len(report)) + report)
        else:
            write_all(out, RESPONSE.pack(OK, slot, seq, used))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fastload feed worker (started by fastload.Loader)")
    parser.add_argument("--slots", required=True, help="comma-separated shared-memory fds")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training loop's to handle
    _die_with_parent()
    inp, out = 0, os.dup(1)
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    fds = [int(v) for v in args.slots.split(",") if v]
    head = read_exact(inp, 4)
    if head is None:
        return 0
    spec_json = read_exact(inp, int.from_bytes(head, "little"))
    try:
        from .feed import FeedReader, FeedSpec

        reader = FeedReader(FeedSpec.from_json(spec_json or b"{}"))
    except Exception as exc:
        report = error_report(exc)
        write_all(out, RESPONSE.pack(FAILED, 0, -1, len(report)) + report)
        return 1
    write_all(out, RESPONSE.pack(READY, 0, -1, 0))
    _serve(reader, fds, inp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
