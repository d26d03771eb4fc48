"""Two gloo ranks under torchrun: disjoint shards, equal batch counts, global reshuffle."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np

import fastload

N = 37


def test_torchrun_two_ranks(tmp_path):
    root = tmp_path / "data"
    for i in range(N):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        image = np.full((20, 20, 3), (i, 0, 0), np.uint8)  # blue = i (BGR on disk)
        cv2.imwrite(str(root / f"c{i % 2}" / f"{i:03d}.png"), image)
    store = str(tmp_path / "data.lmdb")
    fastload.pack(root, store, options=fastload.PackOptions(workers=1, progress=False))
    worker = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           worker, store, str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, timeout=240, env=env, capture_output=True)
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert {r["world"] for r in ranks} == {2}
    assert ranks[0]["batches"] == ranks[1]["batches"] == -(-((N + 1) // 2) // 4)
    for epoch in ("0", "1"):
        a, b = (set(r["seen"][epoch]) for r in ranks)
        assert len(ranks[0]["seen"][epoch]) == len(ranks[1]["seen"][epoch]) == (N + 1) // 2
        assert a | b == set(range(N))
        assert len(a & b) <= 1  # N is odd: one record pads the second rank
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # set_epoch reshuffles globally
