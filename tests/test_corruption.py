"""Damaged stores never crash their reader (issue 12).

A seeded corpus of damage to a small LMDB and a small HDF5 store: truncations at several
points, single bytes flipped across the whole file, zeroed pages. Every damaged copy is read
through ``open_store`` + ``decode``, ``verify`` and both Loader backends in a subprocess
(``corruption_child.py``), so a signal or a hang is a failed case, not a dead test run. Every
outcome must be success (damage in unused space may read fine) or a FastloadError.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastload
from fastload.sample import SampleSpec, make_sample_folder

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "corruption_child.py")
STAGE_TIMEOUT = 60  # seconds one stage may take before it counts as a hang
PAGE = 4096
FLIPS = 20
TRUNCATIONS = (0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98)


# --- the corpus --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    """30 JPEGs of 24-64 px: records of 1-4 KB, some on LMDB's leaf pages, some on overflow pages."""
    root = tmp_path_factory.mktemp("corruption")
    make_sample_folder(root / "data", SampleSpec(num_classes=3, per_class=10, short_side=(24, 64)), workers=1)
    out = {}
    for fmt, ext in (("lmdb", "lmdb"), ("hdf5", "h5")):
        out[fmt] = str(root / f"clean.{ext}")
        fastload.pack(root / "data", out[fmt], options=fastload.PackOptions(format=fmt, workers=1, progress=False))
    return out


def damaged_copies(clean: str, folder: str, seed: int, flips: int = FLIPS) -> list[dict]:
    """The seeded corpus for one store: each case a damaged copy of ``clean`` in ``folder``."""
    with open(clean, "rb") as f:
        blob = f.read()
    size, rng = len(blob), np.random.default_rng(seed)
    ext = os.path.splitext(clean)[1]
    damaged: dict[str, bytes] = {}
    for cut in sorted({size - 1, size - PAGE, *(int(size * t) for t in TRUNCATIONS)}):
        damaged[f"truncated-{cut}"] = blob[:cut]
    for offset in sorted(rng.choice(size, flips, replace=False).tolist()):
        copy = bytearray(blob)
        copy[offset] ^= int(rng.integers(1, 256))
        damaged[f"flip-{offset}"] = bytes(copy)
    pages = size // PAGE
    for page in sorted({0, 1, 2, pages // 2, pages - 2, pages - 1}):
        copy = bytearray(blob)
        copy[page * PAGE : (page + 1) * PAGE] = bytes(PAGE)
        damaged[f"zeroed-page-{page}"] = bytes(copy)
    cases = []
    for name, content in damaged.items():
        path = os.path.join(folder, f"{name}{ext}")
        with open(path, "wb") as f:
            f.write(content)
        cases.append({"case": name, "path": path})
    return cases


# --- running the child -------------------------------------------------------------------------


def run_cases(cases: list[dict], stages: list[str], workdir: str) -> dict[tuple[str, str], dict]:
    """Run ``stages`` of every case in one child process, a stage at a time; a child that dies
    by a signal or hangs pins that on the running stage, and a new child goes on with the rest.

    The DALI stage needs its own child: DALI's threads outlive its pipelines, and the torch
    backend forks its workers, which must not inherit a lock held by such a thread.
    """
    todo = [(case, stage) for stage in stages for case in cases]
    results: dict[tuple[str, str], dict] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])}
    run = 0
    while todo:
        plan = [{**case, "stages": [stage]} for case, stage in todo]
        cases_file = os.path.join(workdir, f"cases-{run}.json")
        with open(cases_file, "w") as f:
            json.dump(plan, f)
        run += 1
        running, fate = _watch(subprocess.Popen([sys.executable, CHILD, cases_file], stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True, env=env), results)
        todo = [key for key in todo if (key[0]["case"], key[1]) not in results]
        if running is None:
            assert not todo, f"the child exited ({fate}) between stages"
            break
        results[running] = {"outcome": fate, "message": ""}
        todo = [key for key in todo if (key[0]["case"], key[1]) not in results]
    return results


def _watch(child: subprocess.Popen, results: dict) -> tuple[tuple[str, str] | None, str]:
    """Collect the child's results; return the stage running when it ended, and how it ended."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout] + [lines.put(None)],
                     daemon=True).start()
    running = None
    while True:
        try:
            line = lines.get(timeout=STAGE_TIMEOUT)
        except queue.Empty:
            child.kill()
            child.wait()
            return running, "hang"
        if line is None:
            break
        record = json.loads(line)
        key = (record["case"], record["stage"])
        if "outcome" in record:
            results[key] = record
            running = None
        else:
            running = key
    code = child.wait()
    stderr = child.stderr.read()
    if code < 0:
        return running, f"killed by {signal.Signals(-code).name}"
    if code:
        return running, f"exit status {code}: {stderr[-2000:]}"
    return running, "exit status 0"


def failures(results: dict[tuple[str, str], dict], store: str) -> list[str]:
    """Outcomes that break the promise: a signal, a hang, a non-fastload exception, a dead
    worker, or an error that does not name the store."""
    bad = []
    for (case, stage), result in sorted(results.items()):
        outcome = result["outcome"]
        message = result.get("message", "")
        if outcome == "ok":
            continue
        if outcome != "error":
            bad.append(f"{case} / {stage}: {outcome}")
        elif not result["fastload"]:
            bad.append(f"{case} / {stage}: {result['type']}: {message[-300:]}")
        elif "killed by signal" in message or result["type"] == "WorkerDiedError":
            bad.append(f"{case} / {stage}: a worker died: {message[-300:]}")
    return bad


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outcomes(stores, tmp_path_factory) -> dict[str, tuple[list[dict], dict]]:
    """Every case's outcome in every stage, per format (run once for all the tests below)."""
    out = {}
    for seed, (fmt, clean) in enumerate(sorted(stores.items())):
        folder = str(tmp_path_factory.mktemp(f"damaged-{fmt}"))
        cases = damaged_copies(clean, folder, seed)
        out[fmt] = (cases, run_cases(cases, ["read", "verify"], folder))
    return out


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_no_damage_crashes_or_escapes_as_a_library_error(outcomes, fmt):
    cases, results = outcomes[fmt]
    assert len(results) == 2 * len(cases)
    assert failures(results, fmt) == []
    for (case, stage), result in results.items():
        if result["outcome"] == "error":
            assert os.path.basename(case) in result["message"] or case in result["message"], (case, stage)
