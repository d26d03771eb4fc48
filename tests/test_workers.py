"""fastload.workers: values and errors cross a process boundary as JSON, never as pickle.
(The ordered map and its dead workers: test_parallel.py.)"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from fastload.errors import CorruptRecordError, WorkerError
from fastload.sources import SourceItem
from fastload.workers import error_report, rebuild_error, reference, resolve
from fastload.workers.codec import decode, encode


def _round_trip(value):
    blobs = []
    data = json.loads(json.dumps(encode(value, blobs)))  # what crosses the pipe
    return decode(data, [bytes(b) for b in blobs])


def test_values_round_trip_with_their_types():
    value = {"items": [SourceItem("a.png", 3, ("a.png", "b.png"))], 7: (1.5, None, "x"),
             "payload": b"\x00\xff" * 10, "mean": np.array([0.25, 0.5], np.float32),
             "empty": np.zeros((0, 3), np.uint16), "scalar": np.float64(2.5), "flag": True}
    back = _round_trip(value)
    assert back["items"] == value["items"] and back[7] == value[7] and back["payload"] == value["payload"]
    assert back["mean"].dtype == np.float32 and back["mean"].flags.writeable
    np.testing.assert_array_equal(back["mean"], value["mean"])
    assert back["empty"].shape == (0, 3) and back["empty"].dtype == np.uint16
    assert type(back["scalar"]) is np.float64 and back["scalar"] == 2.5 and back["flag"] is True


@dataclass
class NotOurs:
    x: int


def test_only_fastload_dataclasses_are_rebuilt():
    blobs = []
    data = encode(NotOurs(1), blobs)
    with pytest.raises(ValueError, match="not a fastload dataclass"):
        decode(data, blobs)
    with pytest.raises(TypeError, match="cannot carry set"):
        encode({1, 2}, [])


def test_fastload_errors_come_back_as_their_class_with_their_facts():
    original = CorruptRecordError("s.lmdb", 4, "a.png", "checksum mismatch")
    report = json.loads(json.dumps(error_report(original)))
    rebuilt = rebuild_error(report, "worker 1")
    assert type(rebuilt) is CorruptRecordError and str(rebuilt) == str(original)
    assert (rebuilt.index, rebuilt.source, rebuilt.store) == (4, "a.png", "s.lmdb")
    assert any("raised in worker 1" in note for note in rebuilt.__notes__)


def test_builtin_and_foreign_errors():
    assert type(rebuild_error(error_report(KeyError("k")), "w")) is KeyError
    foreign = rebuild_error(error_report(json.JSONDecodeError("bad", "doc", 0)), "worker 2")
    assert isinstance(foreign, WorkerError) and "worker 2 failed: JSONDecodeError: bad" in str(foreign)


def test_names():
    assert reference(SourceItem) == "fastload.sources.base:SourceItem"
    assert resolve("fastload.sources.base:SourceItem") is SourceItem
    with pytest.raises(ValueError, match="module level"):
        reference(lambda: 0)
    with pytest.raises(ValueError, match="module:qualname"):
        resolve("fastload.sources")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_worker_can_keep_the_memory_it_frees():
    """Set in a process of its own: it is a process-wide setting, made only in fastload's workers."""
    code = "from fastload.workers.memory import retain_freed_memory; raise SystemExit(0 if retain_freed_memory() else 1)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_torch_backend_workers_keep_freed_memory(small_lmdb):
    import fastload
    from fastload.backends.torch.backend import _init_worker

    loader = fastload.Loader(small_lmdb, batch_size=4, backend="torch", device="cpu", num_threads=1)
    assert loader._get_backend()._new_loader().worker_init_fn is _init_worker
