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


def read_everything(path: str) -> str:
    """Open, then decode every record; a record's own error does not stop the others."""
    bad = 0
    with fastload.open_store(path) as store:
        for index in range(len(store)):
            try:
                store.decode(index)
            except fastload.CorruptRecordError:
                bad += 1
    return f"{bad} records failed"


def verify(path: str) -> str:
    count, problems = verify_path(path, progress=False)
    return f"{len(problems)} problems among {count} records"


def iterate(path: str, backend: str) -> str:
    loader = fastload.Loader(path, backend=backend, device="cpu", num_threads=1, augment="eval",
                             image_size=32, batch_size=4)
    seen = sum(len(labels) for _, labels in loader)
    return f"{seen} images"


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
                emit(case=case["case"], stage=stage, outcome="error", type=type(exc).__name__,
                     fastload=isinstance(exc, fastload.FastloadError), message=str(exc)[-2000:])
            else:
                emit(case=case["case"], stage=stage, outcome="ok", message=detail)


if __name__ == "__main__":
    main(sys.argv[1])
