"""Run in a subprocess by test_corruption.py: read damaged stores every way a user would.

``python corruption_child.py CASES.json``: CASES is a list of ``{"case", "path", "stages"}``.
Before each stage the child prints ``{"case", "stage"}``, after it ``{"case", "stage",
"outcome", "type", "fastload", "message"}``, one JSON line each, flushed: when a signal kills
the child or it hangs, the parent knows which stage of which case was running.
"""

from __future__ import annotations

import json
import sys

import fastload
from fastload.inspect import verify_path


def read_everything(path: str) -> dict:
    """Open, then decode every record; a record's own error does not stop the others."""
    failed = []
    with fastload.open_store(path) as store:
        for index in range(len(store)):
            try:
                store.decode(index)
            except fastload.CorruptRecordError as exc:
                assert exc.index == index and path in str(exc), exc
                failed.append(index)
    return {"failed": failed}


def verify(path: str) -> dict:
    count, problems = verify_path(path, progress=False)
    return {"count": count, "records": [p.index for p in problems if p.index is not None],
            "store": [p.reason for p in problems if p.index is None]}


def iterate(path: str, backend: str) -> dict:
    loader = fastload.Loader(path, backend=backend, device="cpu", num_threads=1, augment="eval",
                             image_size=32, batch_size=4)
    return {"images": sum(len(labels) for _, labels in loader)}


STAGES = {
    "read": read_everything,
    "verify": verify,
    "torch": lambda path: iterate(path, "torch"),
    "dali": lambda path: iterate(path, "dali"),
}


def emit(**line: object) -> None:
    print(json.dumps(line), flush=True)


def main(cases_file: str) -> None:
    with open(cases_file) as f:
        cases = json.load(f)
    for case in cases:
        for stage in case["stages"]:
            emit(case=case["case"], stage=stage)
            try:
                detail = STAGES[stage](case["path"])
            except Exception as exc:  # every exception is the result under test
                message = str(exc)
                if len(message) > 3000:  # a worker's traceback: keep its first and last lines
                    message = message[:1000] + " ... " + message[-2000:]
                emit(case=case["case"], stage=stage, outcome="error", type=type(exc).__name__,
                     fastload=isinstance(exc, fastload.FastloadError), message=message)
            else:
                emit(case=case["case"], stage=stage, outcome="ok", detail=detail)


if __name__ == "__main__":
    main(sys.argv[1])
