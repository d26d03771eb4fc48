"""A worker of ``ordered_map``: ``python -m fastload.workers.map_worker`` (started by the pool,
never by hand). Its stdin brings ``sys.path``, then the function's name and the context, then
``{"seq", "chunk"}`` messages until it closes; its stdout answers ``{"seq", "value"}`` or
``{"seq", "error"}`` (a JSON error report) for each chunk, in the order they came."""

from __future__ import annotations

from .channel import read_message, send_message
from .failures import error_report
from .names import resolve
from .process import worker_stdio


def main() -> None:
    import sys

    import cv2

    cv2.setNumThreads(1)  # one OpenCV thread per worker process: the processes are the parallelism
    inp, out = worker_stdio(die_with_parent=False)
    try:
        ok, path = read_message(inp)
        if not ok:
            return
        sys.path[:] = path
        ok, setup = read_message(inp)
        if not ok:
            return
        function, context = resolve(setup["function"]), setup["context"]
        while True:
            ok, task = read_message(inp)
            if not ok:
                return  # the parent closed our stdin: all done
            try:
                # Encoded whole before a byte is written: a result it cannot carry is an error.
                send_message(out, {"seq": task["seq"], "value": function(task["chunk"], context)})
            except BrokenPipeError:
                raise
            except Exception as exc:
                send_message(out, {"seq": task["seq"], "error": error_report(exc)})
    except (BrokenPipeError, KeyboardInterrupt):
        return  # the parent went away: nothing left to do


if __name__ == "__main__":
    main()
