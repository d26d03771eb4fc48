"""Damaged stores never crash their reader (issue 12).

A seeded corpus of damage to a small LMDB and a small HDF5 store: truncations at several
points, single bytes flipped across the whole file, zeroed pages. Every damaged copy is read
through ``open_store`` + ``decode``, ``verify`` and both Loader backends in a subprocess
(``corruption_child.py``), so a signal or a hang is a failed case, not a dead test run. Every
outcome must be success (damage in unused space may read fine) or a FastloadError.
"""

from __future__ import annotations

import importlib.util
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
    """The seeded corpus for one store, each case a damaged copy of ``clean`` in ``folder``:
    truncations, single flipped bytes anywhere, zeroed pages, and the damage that crashed or
    hung LMDB and HDF5 themselves (``targeted``)."""
    with open(clean, "rb") as f:
        blob = f.read()
    size, rng = len(blob), np.random.default_rng(seed)
    damaged: dict[str, bytes] = {}
    for cut in sorted({size - 1, size - PAGE, *(int(size * t) for t in TRUNCATIONS)}):
        damaged[f"truncated-{cut}"] = blob[:cut]
    for offset in sorted(rng.choice(size, flips, replace=False).tolist()):
        damaged[f"flip-{offset}"] = patched(blob, offset, bytes([blob[offset] ^ int(rng.integers(1, 256))]))
    pages = size // PAGE
    for page in sorted({0, 1, 2, pages // 2, pages - 2, pages - 1}):
        damaged[f"zeroed-page-{page}"] = patched(blob, page * PAGE, bytes(PAGE))
    damaged.update(targeted(clean, blob))
    cases = []
    for name, content in damaged.items():
        path = os.path.join(folder, name + os.path.splitext(clean)[1])
        with open(path, "wb") as f:
            f.write(content)
        cases.append({"case": name, "path": path})
    return cases


def patched(blob: bytes, offset: int, new: bytes) -> bytes:
    return blob[:offset] + new + blob[offset + len(new) :]


def targeted(clean: str, blob: bytes) -> dict[str, bytes]:
    """Damage each library could not survive before fastload read around it."""
    if clean.endswith(".lmdb"):
        # Record 3's node on its leaf page (flags 0x02 at byte 10 of the 4 KiB page): data size
        # (4 bytes), flags (2), key size 8 (2), then the key. A branch page may hold the key too.
        needle = b"\x08\x00" + (3).to_bytes(8, "big")
        nodes = [at - 6 for at in range(len(blob)) if blob.startswith(needle, at)]
        node = next(n for n in nodes if blob[n // PAGE * PAGE + 10] == 0x02)
        return {
            "lmdb-dupdata-flag": patched(blob, node + 4, b"\x04\x00"),  # py-lmdb: lmdb.CorruptedError
            "lmdb-huge-size": patched(blob, node, (0x7FFF0000).to_bytes(4, "little")),  # py-lmdb: SIGBUS
        }
    import h5py

    # Format version 2 has no global heap (whose zeroed collection made HDF5 loop forever, and
    # a flipped string length allocate 2 GiB): its paths are a JSON blob, damaged here instead.
    assert b"GCOL" not in blob
    with h5py.File(clean, "r") as f:
        paths_at = f["paths"].id.get_offset()
    header_at = blob.index(b'{"channels"')  # the header attribute, a fixed-length byte string
    return {
        "hdf5-paths-blob": patched(blob, paths_at, b"\xf0\xff\xff\x7f"),
        "hdf5-zeroed-header": patched(blob, header_at, bytes(16)),
    }


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
        # Its own session: a hang kills the child's loader workers with it.
        running, fate = _watch(subprocess.Popen([sys.executable, CHILD, cases_file], stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True, env=env,
                                                start_new_session=True), results)
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
            os.killpg(child.pid, signal.SIGKILL)
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


def failures(results: dict[tuple[str, str], dict]) -> list[str]:
    """Outcomes that break the promise: a signal, a hang, a dead worker, or an exception that
    is not a FastloadError. A torch worker's FastloadError re-raised as a RuntimeError that
    carries its message is left to test_torch_backend_keeps_the_error_type."""
    bad = []
    for (case, stage), result in sorted(results.items()):
        outcome, message = result["outcome"], result.get("message", "")
        if outcome == "ok":
            continue
        if outcome != "error":
            bad.append(f"{case} / {stage}: {outcome}")
        elif "killed by signal" in message or result["type"] == "WorkerDiedError":
            bad.append(f"{case} / {stage}: a worker died: {message[-300:]}")
        elif not result["fastload"] and not torch_wrapped(stage, result):
            bad.append(f"{case} / {stage}: {result['type']}: {message[-300:]}")
    return bad


def torch_wrapped(stage: str, result: dict) -> bool:
    """A FastloadError raised in a torch DataLoader worker, re-raised as RuntimeError."""
    return (stage == "torch" and result["type"] == "RuntimeError"
            and "Error in DataLoader worker" in result["message"] and "fastload.errors." in result["message"])


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outcomes(stores, tmp_path_factory) -> dict[str, tuple[list[dict], dict]]:
    """Every case's outcome in every stage, per format (run once for all the tests below)."""
    out = {}
    for seed, (fmt, clean) in enumerate(sorted(stores.items())):
        folder = str(tmp_path_factory.mktemp(f"damaged-{fmt}"))
        cases = damaged_copies(clean, folder, seed)
        results = run_cases(cases, ["read", "verify", "torch"], folder)
        if importlib.util.find_spec("nvidia.dali") is not None:
            results.update(run_cases(worth_a_pipeline(cases, results), ["dali"], folder))
        out[fmt] = ({c["case"]: c["path"] for c in cases}, results)
    return out


def worth_a_pipeline(cases: list[dict], results: dict[tuple[str, str], dict]) -> list[dict]:
    """The cases for the DALI backend (a pipeline costs ~0.3 s to build): every case that
    damaged a record or the store, and three whose damage lay where no read goes."""
    damaged = [c for c in cases if results[c["case"], "read"].get("detail", {}).get("failed", True)]
    return damaged + [c for c in cases if c not in damaged][:3]


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_no_signal_no_hang_no_library_exception(outcomes, fmt):
    cases, results = outcomes[fmt]
    for stage in ("read", "verify", "torch"):
        assert all((case, stage) in results for case in cases), stage
    assert importlib.util.find_spec("nvidia.dali") is None or sum(s == "dali" for _, s in results) > 10
    assert failures(results) == []


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_every_error_names_the_damaged_store(outcomes, fmt):
    cases, results = outcomes[fmt]
    for (case, stage), result in results.items():
        if result["outcome"] == "error":
            assert cases[case] in result["message"], (case, stage, result["message"][-300:])


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_verify_finds_all_that_reading_finds(outcomes, fmt):
    cases, results = outcomes[fmt]
    for case in cases:
        read, verify = results[case, "read"], results[case, "verify"]
        if verify["outcome"] == "error":  # no longer a store at all (its first page zeroed, say)
            assert read["outcome"] == "error" and read["type"] == verify["type"] == "StoreFormatError", case
        elif read["outcome"] == "error":  # refused at open: verify says why
            assert verify["detail"]["count"] is None or verify["detail"]["store"], case
        else:
            assert set(read["detail"]["failed"]) <= set(verify["detail"]["records"]), case
    truncated = [case for case in cases if case.startswith("truncated")]
    assert all(results[case, "read"]["outcome"] == "error" for case in truncated)
    assert any("truncated: " in results[case, "read"]["message"] for case in truncated)


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_damage_that_broke_lmdb_and_hdf5_is_reported(outcomes, fmt):
    cases, results = outcomes[fmt]
    named = [case for case in cases if case.startswith(fmt)]
    assert len(named) == 2
    for case in named:
        read = results[case, "read"]
        damaged = read["outcome"] == "error" or read["detail"]["failed"]
        assert damaged and results[case, "verify"].get("detail") != {"count": 30, "records": [], "store": []}, case


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_torch_backend_keeps_the_error_type(outcomes, fmt):
    _, results = outcomes[fmt]
    wrapped = [case for (case, stage), r in results.items() if stage == "torch" and r["outcome"] == "error"
               and not r["fastload"]]
    assert wrapped == []
