"""A feed worker process: ``python -m fastload.backends.dali.worker --slots FD,FD,...``.

Started by ``FeedPool`` through ``fastload.workers`` (a fresh interpreter: never a fork, safe
however CUDA or threads stand in the parent, and it never re-runs the user's ``__main__``). It
reads requests on stdin, fills shared-memory slots (memfds inherited from the parent) and
answers on stdout. It exits when its stdin closes, which is also what happens when the parent
dies, or quietly when its answer finds stdout closed (a loader closed while a batch was filling).
"""

from __future__ import annotations

import sys

import numpy as np

from ...workers.channel import read_exact, send_message, write_all
from ...workers.failures import error_report
from ...workers.slots import SlotMaps, start_slot_worker
from .protocol import FAILED, OK, READY, REQUEST, RESPONSE

__all__ = ["main"]


def _fail(out: int, slot: int, seq: int, exc: Exception) -> None:
    write_all(out, RESPONSE.pack(FAILED, slot, seq, 0))
    send_message(out, error_report(exc))


def _serve(reader: object, fds: list[int], inp: int, out: int) -> None:
    maps = SlotMaps(fds)
    while True:
        head = read_exact(inp, REQUEST.size)
        if head is None:
            return
        slot, count, seq, epoch, capacity = REQUEST.unpack(head)
        raw = read_exact(inp, 8 * count)
        if raw is None:
            return
        try:
            used = reader.fill(memoryview(maps.get(slot, capacity))[:capacity], epoch, np.frombuffer(raw, np.int64))  # type: ignore[attr-defined]
        except Exception as exc:
            _fail(out, slot, seq, exc)
        else:
            write_all(out, RESPONSE.pack(OK, slot, seq, used))


def main(argv: list[str] | None = None) -> int:
    started = start_slot_worker(argv, "fastload feed worker (started by fastload.Loader)")
    if started is None:
        return 0
    inp, out, fds, spec_json = started
    try:
        from .feed import FeedReader, FeedSpec

        reader = FeedReader(FeedSpec.from_json(spec_json))
    except Exception as exc:
        _fail(out, 0, -1, exc)
        return 1
    try:
        write_all(out, RESPONSE.pack(READY, 0, -1, 0))
        _serve(reader, fds, inp, out)
    except BrokenPipeError:  # the loader closed (or died) while this worker answered: nobody to tell
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
