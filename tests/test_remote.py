"""Stores in object storage, against a real S3-compatible server on localhost (moto's server
mode) through the real s3fs client: pack to it, train 2 gloo ranks from it through a cache
smaller than the store, resume at another world size, and the faults (a stopped server, an
altered object) end in errors that name the shard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from s3server import s3_server  # noqa: E402

import fastload  # noqa: E402
from fastload import ops  # noqa: E402
from fastload.errors import MissingExtraError, RemoteShardError  # noqa: E402
from fastload.inspect import inspect_path, verify_path  # noqa: E402

N, SHARD = 48, 8  # 6 shards of 8 records; record i is a solid image whose blue value is i


def _folder(root) -> str:
    for i in range(N):
        os.makedirs(root / f"c{i % 2}", exist_ok=True)
        cv2.imwrite(str(root / f"c{i % 2}" / f"{i:03d}.png"), np.full((20, 20, 3), (i, 0, 0), np.uint8))
    return str(root)


def _pack(folder: str, url: str) -> None:
    fastload.pack(folder, url, options=fastload.PackOptions(workers=1, progress=False, shard_size=SHARD))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return _folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def server(folder):
    with s3_server() as running:
        _pack(folder, "s3://data/train.lmdb")
        yield running.endpoint


def _loader(url: str, cache: str, limit, **kw) -> fastload.Loader:
    return fastload.Loader(url, batch_size=4, augment=[ops.CenterCrop(8)], output_dtype="uint8", layout="NHWC",
                           shuffle=True, seed=5, backend="torch", device="cpu", num_threads=0,
                           cache_dir=cache, cache_limit=limit, **kw)


def _tags(loader) -> list[int]:
    return [t for images, _ in loader for t in images[:, 0, 0, 2].tolist()]


def test_a_url_is_never_a_local_path(folder, tmp_path, monkeypatch):
    if any(__import__("importlib").util.find_spec(m) for m in ("gcsfs",)):
        pytest.skip("gcsfs is installed: gs:// is then a real filesystem")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingExtraError, match=r"fastload\[gcs\]"):
        fastload.pack(folder, "gs://bucket/x.lmdb", options=fastload.PackOptions(workers=1, progress=False))
    for call in (lambda: fastload.open_store("gs://bucket/x.lmdb"), lambda: fastload.Loader("gs://bucket/x.lmdb")):
        with pytest.raises(MissingExtraError):
            call()
    assert os.listdir(tmp_path) == []  # no folder named "gs:"


def test_pack_then_open_inspect_verify(server, folder, tmp_path):
    url = "s3://data/train.lmdb"
    store = fastload.open_store(url, cache_dir=str(tmp_path / "cache"))
    assert len(store) == N and store.shard_counts == [SHARD] * (N // SHARD)
    assert sorted(int(store.decode(i)[0, 0, 2]) for i in range(N)) == list(range(N))
    store.close()
    assert inspect_path(url, progress=False)["count"] == N
    assert verify_path(url, progress=False) == (N, [])
    from fastload.errors import StoreExistsError

    with pytest.raises(StoreExistsError):
        _pack(folder, url)


@pytest.mark.timeout(240)
def test_two_ranks_bounded_cache_then_elastic_resume(server, tmp_path):
    url, cache = "s3://data/train.lmdb", str(tmp_path / "cache")
    probe = fastload.open_store(url, cache_dir=cache)
    limit = 3 * max(e.nbytes for e in probe.entries)  # half the store: shard-aware shuffle
    assert limit < probe.nbytes
    worker = os.path.join(os.path.dirname(__file__), "remote_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           worker, url, cache, str(limit), str(tmp_path)]
    code, output = _run_bounded(cmd, timeout=150)
    assert code == 0, output[-4000:]
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert all(r["sharded_order"] for r in ranks)
    assert ranks[0]["batches"] == ranks[1]["batches"] == N // 2 // 4
    assert ranks[0]["sizes"] == ranks[1]["sizes"] and set(ranks[0]["sizes"]) == {4}
    a, b = (r["seen"]["0"] for r in ranks)
    assert sorted(a + b) == list(range(N))  # every sample once in the epoch
    assert max(r["most"] for r in ranks) <= limit  # the cache never held more than its limit
    # resume epoch 1 at 1 and at 3 ranks: exactly the samples no rank has seen yet
    seen = ranks[0]["seen"]["1"] + ranks[1]["seen"]["1"]
    assert len(seen) == 2 * 3 * 4 and len(set(seen)) == len(seen)
    state = ranks[0]["state"]
    assert state["epoch"] == 1 and state["seen"] == len(seen)
    for world in (1, 3):
        rest = []
        for rank in range(world):
            loader = _loader(url, cache, limit, rank=rank, world_size=world)
            loader.load_state_dict(state)
            rest += _tags(loader)
            loader.close()
        assert sorted(seen + rest) == list(range(N)), world


def _run_bounded(cmd: list[str], timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group; past ``timeout`` kill the whole group (torchrun and
    its ranks) and say so, with the output so far (the ranks' watchdog prints their stacks first)."""
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, f"TIMED OUT after {timeout} s (killed):\n" + out.decode(errors="replace")


@pytest.mark.timeout(120)  # a hang fails here, not in CI's global timeout
def test_stopped_server_is_an_error_naming_the_shard(folder, tmp_path):
    with s3_server() as running:
        _pack(folder, "s3://data/stop.lmdb")
        loader = _loader("s3://data/stop.lmdb", str(tmp_path / "cache"), 2 * 21000)
        it = iter(loader)
        next(it)
        running.stop()
        with pytest.raises(RemoteShardError, match=r"shard stop-0000\d-of-00006\.lmdb at s3://data/stop\.lmdb"):
            for _ in it:
                pass
        loader.close()


@pytest.mark.parametrize("damage", ["altered", "truncated"])
def test_damaged_object_is_caught_and_named(server, folder, tmp_path, damage):
    import boto3

    url = f"s3://data/{damage}.lmdb"
    _pack(folder, url)
    client = boto3.client("s3", endpoint_url=server)
    key = f"{damage}.lmdb/{damage}-00002-of-00006.lmdb"
    body = bytearray(client.get_object(Bucket="data", Key=key)["Body"].read())
    if damage == "altered":
        body[len(body) // 2] ^= 0xFF
    else:
        del body[len(body) // 2:]
    client.put_object(Bucket="data", Key=key, Body=bytes(body))
    store = fastload.open_store(url, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(RemoteShardError, match=rf"shard {damage}-00002-of-00006\.lmdb at {url}.*truncated or altered"):
        store.decode(2 * SHARD)
    assert int(store.decode(0)[0, 0, 2]) == 0  # the other shards still read
    store.close()
    leftovers = [f for d in os.listdir(tmp_path / "cache") if os.path.isdir(tmp_path / "cache" / d)
                 for f in os.listdir(tmp_path / "cache" / d) if "00002" in f and not f.endswith(".lock")]
    assert leftovers == []  # no partial or bad file left for a reader


@pytest.mark.timeout(180)
def test_dali_backend_reads_a_remote_store(server, tmp_path):
    """The DALI backend's feed workers open the store from its URL and cache settings (not a
    shard's URL as a store): one epoch through a cache smaller than the store, every record once."""
    pytest.importorskip("nvidia.dali")
    url, cache = "s3://data/train.lmdb", str(tmp_path / "cache")
    probe = fastload.open_store(url, cache_dir=cache)
    limit = 3 * max(e.nbytes for e in probe.entries)
    probe.close()
    loader = fastload.Loader(url, batch_size=4, augment=[ops.CenterCrop(8)], output_dtype="uint8", layout="NHWC",
                             shuffle=True, seed=5, backend="dali", device="cpu", num_threads=1, feed_workers=2,
                             cache_dir=cache, cache_limit=limit)
    # backend="auto" decides from the shards' headers in the index: JPEGs, DALI's to decode
    auto = fastload.Loader(url, batch_size=4, device="cpu", cache_dir=cache, cache_limit=limit)
    try:
        assert auto.backend_name == "dali"
        assert loader.backend_name == "dali" and loader.plan.shard_sizes is not None
        assert sorted(_tags(loader)) == list(range(N))
    finally:
        auto.close()
        loader.close()


@pytest.mark.timeout(120)
def test_torch_backend_worker_processes_read_a_remote_store(server, tmp_path):
    """DataLoader worker processes (forked) each read through the node's one bounded cache."""
    url, cache = "s3://data/train.lmdb", str(tmp_path / "cache")
    probe = fastload.open_store(url, cache_dir=cache)
    limit = 3 * max(e.nbytes for e in probe.entries)
    probe.close()
    loader = fastload.Loader(url, batch_size=4, augment=[ops.CenterCrop(8)], output_dtype="uint8", layout="NHWC",
                             shuffle=True, seed=5, backend="torch", device="cpu", num_threads=2,
                             cache_dir=cache, cache_limit=limit)
    try:
        assert sorted(_tags(loader)) == list(range(N))
    finally:
        loader.close()


@pytest.mark.timeout(120)
def test_benchmark_runs_at_toy_size(tmp_path):
    """benchmarks/remote.py: local disk, cold and warm cache, each a figure per round."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.remote import measure

    before = os.environ.get("AWS_ENDPOINT_URL")
    result = measure(str(tmp_path), images=16, shard_size=8, rounds=1, batch_size=4, threads=0, backend="torch")
    assert set(result["median_img_per_s"]) == {"local", "s3-cold", "s3-warm"}
    assert all(v > 0 for v in result["median_img_per_s"].values()) and result["images"] == 16
    assert os.environ.get("AWS_ENDPOINT_URL") == before  # the caller's environment is left as it was
