"""A store in object storage against the same store on local disk: images/s of one epoch.

A local S3-compatible server (moto's, in its own process on localhost: no network in the
figures, only the client, the HTTP transfer and the shard cache) holds the store packed with ``fastload pack -o s3://...``;
the same images packed to local shards are the reference. Three ways to read, interleaved in
rounds (the machine's load drifts between rounds alike for all three):

- ``local``: ``Loader("shards-*.lmdb")``.
- ``s3-cold``: ``Loader("s3://...")`` with an empty cache: every shard is downloaded while the
  epoch runs (the prefetcher fetches the shards the plan needs next).
- ``s3-warm``: the same URL and cache after a first epoch: every shard is already cached.

Each figure is the median of ``--rounds`` epochs, each loader built fresh (its start included).

    python -m benchmarks.remote --images 512 --rounds 3 --json out.json

Needs ``moto[server]`` and ``s3fs`` (the dev extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import fastload

__all__ = ["measure", "main"]


def _epoch(source: str, batch_size: int, threads: int, backend: str, **remote: Any) -> float:
    """Images/s of one epoch of a freshly built Loader (its start and first fetches included)."""
    start = time.perf_counter()
    loader = fastload.Loader(source, batch_size=batch_size, augment="train", shuffle=True, seed=0,
                             backend=backend, device="cpu", num_threads=threads, drop_last=False, **remote)
    count = 0
    try:
        for images, _ in loader:
            count += len(images)
    finally:
        loader.close()
    return count / (time.perf_counter() - start)


def measure(work: str, *, images: int, shard_size: int, rounds: int, batch_size: int, threads: int,
            backend: str) -> dict[str, Any]:
    """Generate and pack the data, start the server, and time the three ways (see the module doc)."""
    import boto3

    folder = os.path.join(work, "images")
    per_class = max(1, images // 8)
    fastload.make_sample_folder(folder, fastload.SampleSpec(num_classes=8, per_class=per_class, quality=90))
    options = fastload.PackOptions(shard_size=shard_size, progress=False)
    local = os.path.join(work, "shards.lmdb")
    fastload.pack(folder, local, options=options)
    # the server in a process of its own: a thread of this one would share its GIL, and a Loader
    # forking workers could copy a lock that thread holds
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        host, port = probe.getsockname()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto_server did not start (pip install 'moto[server]')") from None
            time.sleep(0.05)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    try:
        boto3.client("s3").create_bucket(Bucket="bench")
        url = "s3://bench/train.lmdb"
        fastload.pack(folder, url, options=options)
        pattern = os.path.join(work, "shards-*.lmdb") if images > shard_size else local
        warm = os.path.join(work, "cache-warm")
        _epoch(url, batch_size, threads, backend, cache_dir=warm)  # fills the warm cache (untimed)
        figures: dict[str, list[float]] = {"local": [], "s3-cold": [], "s3-warm": []}
        for r in range(rounds):
            figures["local"].append(_epoch(pattern, batch_size, threads, backend))
            cold = os.path.join(work, f"cache-cold-{r}")  # an empty cache each round
            figures["s3-cold"].append(_epoch(url, batch_size, threads, backend, cache_dir=cold))
            figures["s3-warm"].append(_epoch(url, batch_size, threads, backend, cache_dir=warm))
    finally:
        server.kill()
        server.wait(timeout=30)
        for key, value in saved.items():  # the caller's environment back (a test runs this in-process)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    store_bytes = sum(os.path.getsize(os.path.join(work, f)) for f in os.listdir(work)
                      if f.startswith("shards") and f.endswith(".lmdb"))
    medians = {k: statistics.median(v) for k, v in figures.items()}
    return {
        "images": per_class * 8, "shard_size": shard_size, "store_bytes": store_bytes, "rounds": rounds,
        "batch_size": batch_size, "threads": threads, "backend": backend, "cpus": os.cpu_count(),
        "machine": platform.node(), "img_per_s": figures, "median_img_per_s": medians,
        "vs_local": {k: medians[k] / medians["local"] for k in medians},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="dali", choices=["dali", "torch"])
    p.add_argument("--work", help="folder for the data (default: a temporary one)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fastload-remote-bench-") as tmp:
        result = measure(args.work or tmp, images=args.images, shard_size=args.shard_size, rounds=args.rounds,
                         batch_size=args.batch_size, threads=args.threads, backend=args.backend)
    for name, value in result["median_img_per_s"].items():
        runs = ", ".join(f"{v:.0f}" for v in result["img_per_s"][name])
        print(f"{name:8s} {value:7.0f} img/s  ({result['vs_local'][name]:.2f}x local; rounds {runs})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
