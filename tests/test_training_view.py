"""What training sees (issue 22): the stall meter, record indices, loss-driven sampling, the audit.

Timing checks compare the meter with a known truth (a step that sleeps, an op that sleeps) by
lower bounds that hold on any machine and upper bounds generous for a loaded 2-core CI box.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

import fastload
from fastload import ops
from fastload.cli import main as fastload_cli
from fastload.loader import dali_available
from fastload.loss_sampling import LossSampling, LossTracker, persistence

BACKENDS = ["torch"] + (["dali"] if dali_available() else [])
SMALL = [ops.CenterCrop(8)]
PAUSE = 0.01


@fastload.op
def pause(x):
    time.sleep(PAUSE)
    return x


def _loader(store, backend="torch", **kw):
    args = dict(batch_size=4, augment=SMALL, output_dtype="uint8", layout="NHWC", backend=backend,
                device="cpu", num_threads=1 if backend == "dali" else 0)
    return fastload.Loader(store, **{**args, **kw})


# --- the stall meter ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_stall_meter_times_a_sleeping_step(small_lmdb, backend):
    loader = _loader(small_lmdb, backend)
    list(loader)  # warm: workers and pipelines start in the first epoch
    step = 0.03
    started = time.perf_counter()
    for _ in loader:
        time.sleep(step)
    wall = time.perf_counter() - started
    s = loader.stats()
    assert (s.epoch, s.batches, s.images) == (1, len(loader), 24)
    truth = step * len(loader)
    assert truth <= s.step_s <= truth * 1.5 + 0.5
    assert abs((s.wait_s + s.step_s) - wall) <= max(0.1, 0.05 * wall)  # the loop's time, all of it
    assert 0.0 <= s.stall_fraction < 1.0
    assert loader.stats(total=True).batches == 2 * len(loader)
    assert "rank 0 epoch 1: 6 batches, 24 img" in s.summary()
    loader.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stall_meter_blames_a_slow_source(small_lmdb, backend):
    loader = _loader(small_lmdb, backend, augment=[*SMALL, pause])
    for _ in loader:  # an instant step
        pass
    s = loader.stats()
    slow = PAUSE * 24
    assert s.wait_s >= slow and s.stall_fraction > 0.8
    # both backends run a custom op with the ops (DALI's CPU host stage times ops and finish as one)
    assert slow <= s.stages["decode_ops"] + s.stages.get("host_finish", 0.0) <= s.wait_s
    loader.close()


def test_log_every_writes_one_line_per_epoch(small_lmdb, caplog):
    loader = _loader(small_lmdb, log_every=1)
    with caplog.at_level("INFO", logger="fastload.stats"):
        for _ in range(2):
            list(loader)
    lines = [r.getMessage() for r in caplog.records if r.name == "fastload.stats"]
    assert [line.split(":")[0] for line in lines] == ["rank 0 epoch 0", "rank 0 epoch 1"]
    with pytest.raises(ValueError, match="log_every"):
        _loader(small_lmdb, log_every=0)


def test_report_without_distributed_is_this_rank(small_lmdb):
    loader = _loader(small_lmdb)
    list(loader)
    report = fastload.stats.report(loader)
    assert report.slowest == 0 and report.ranks[0].batches == len(loader)


# --- record indices ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_return_index_covers_every_record_and_resumes(small_lmdb, backend):
    loader = _loader(small_lmdb, backend, shuffle=True, seed=3, return_index=True)
    store_labels = np.asarray(loader.store.labels)
    first = []
    for images, labels, idx in loader:
        assert idx.dtype == torch.int64 and len(idx) == len(images)
        assert labels.tolist() == store_labels[idx.numpy()].tolist()
        first += idx.tolist()
    assert sorted(first) == list(range(24))
    again = _loader(small_lmdb, "torch", shuffle=True, seed=3, return_index=True)
    assert [i for _, _, b in again for i in b.tolist()] == first  # the same across backends
    it = iter(loader)
    head = [next(it)[2] for _ in range(2)]
    state = loader.state_dict()
    resumed = _loader(small_lmdb, backend, shuffle=True, seed=3, return_index=True)
    resumed.load_state_dict(state)
    tail = [b for _, _, b in resumed]
    whole = torch.cat(head + tail).tolist()
    assert sorted(whole) == list(range(24)) and whole != first  # epoch 1: all records, a new order
    described = loader.dataset.describe(head[0])
    assert [d["record"] for d in described] == head[0].tolist()
    assert all(os.path.basename(d["path"]).endswith(".jpg") and d["class"] for d in described)
    loader.close(), resumed.close(), again.close()


def test_return_index_gives_store_records_of_a_subset(small_lmdb):
    loader = _loader(small_lmdb, indices=[20, 3, 7, 11, 5], return_index=True)
    assert torch.cat([b for _, _, b in loader]).tolist() == [20, 3, 7, 11, 5]


def test_return_index_covers_every_record_once_per_epoch_in_ddp(tmp_path):
    root = tmp_path / "data"
    for i in range(32):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / f"c{i % 2}" / f"{i:03d}.png"), np.full((12, 12, 3), i, np.uint8))
    store = str(tmp_path / "data.lmdb")
    fastload.pack(root, store, options=fastload.PackOptions(workers=1, progress=False))
    worker = os.path.join(os.path.dirname(__file__), "training_ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           worker, store, str(tmp_path)]
    done = subprocess.run(cmd, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    a, b = (r["seen"]["0"] for r in ranks)
    assert len(a) == len(b) == 16 and sorted(a + b) == list(range(32))  # every record once
    # the losses of both ranks combined: the same weights, and the same order, on both ranks ...
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["order1"] == ranks[1]["order1"]
    assert sorted(ranks[0]["seen"]["1"] + ranks[1]["seen"]["1"]) == sorted(ranks[0]["order1"])
    # ... and those a single process given every loss computes (reproducible)
    single = fastload.Loader(store, batch_size=4, augment=SMALL, shuffle=True, seed=5, backend="torch",
                             device="cpu", num_threads=0, loss_sampling=LossSampling(floor=0.2))
    single.sampler.update(np.arange(32), 1.0 + np.arange(32) % 7)
    single._steer(1, 0)
    assert single._steering.tracker.multipliers.tolist() == ranks[0]["weights"]
    assert single.plan.global_order(1).tolist() == ranks[0]["order1"]
    # the gathered stall meter: rank 1's source sleeps, so rank 1 is named the slowest
    assert ranks[0]["ranks"] == [0, 1] and ranks[0]["slowest"] == ranks[1]["slowest"] == 1
    assert ranks[0]["waits"][1] >= 16 * 0.02 and "slowest: rank 1" in ranks[0]["report"]


# --- loss-driven sampling ----------------------------------------------------------------------

def _epoch_indices(loader):
    return torch.cat([b for _, _, b in loader]).tolist()


def _feed(loader, loss_of):
    for _, _, idx in loader:
        loader.sampler.update(idx, torch.tensor([loss_of(i) for i in idx.tolist()]))


def test_loss_sampling_draws_high_losses_more_with_a_floor():
    tracker = LossTracker(6, LossSampling(floor=0.25))
    tracker.update(np.arange(6), [0.0, 0.1, 1.0, 1.0, 1.0, 8.0])
    assert tracker.commit()
    w = tracker.multipliers
    assert w[5] > w[2] > w[1] and w[0] == w[1] == 0.25  # grows with loss; easy ones at the floor
    assert not tracker.commit()  # nothing new: weights kept
    with pytest.raises(ValueError, match="one loss per sample"):
        tracker.update([0, 1], [1.0])
    with pytest.raises(ValueError, match="non-finite loss for record 1"):
        tracker.update([0, 1], [1.0, float("nan")])


def test_exclude_top_leaves_out_persistent_high_losses():
    tracker = LossTracker(10, LossSampling(exclude_top=0.2, exclude_after=2))
    for epoch in range(2):
        losses = np.linspace(0.1, 1.0, 10)
        losses[[3, 7]] = 5.0 - epoch  # always the highest
        tracker.update(np.arange(10), losses)
        tracker.commit()
    assert np.flatnonzero(tracker.multipliers == 0).tolist() == [3, 7]
    assert persistence(tracker.history)[[3, 7]].min() > 0.85


def test_loss_sampling_is_deterministic_follows_the_losses_and_balances(small_lmdb):
    def run():
        loader = _loader(small_lmdb, shuffle=True, seed=1, return_index=True, sampler="balanced",
                         loss_sampling=LossSampling(floor=0.05, power=2.0))
        _feed(loader, lambda i: 10.0 if i in (0, 1) else 0.1)
        return loader, _epoch_indices(loader)
    (loader, first), (_, second) = run(), run()
    assert first == second
    counts = np.bincount(first, minlength=24)
    assert counts[[0, 1]].sum() > 8  # 2 of 24 records hold most of the loss: drawn far more than 2 times
    base = fastload.Loader(small_lmdb, sampler="balanced", batch_size=4).plan.weights
    assert np.allclose(loader.plan.weights, base * loader._steering.tracker.multipliers)


def test_resume_restores_the_loss_weights(small_lmdb):
    def make():
        return _loader(small_lmdb, shuffle=True, seed=2, return_index=True, loss_sampling=True)
    loader = make()
    _feed(loader, lambda i: 1.0 + i)
    it = iter(loader)
    [next(it) for _ in range(2)]
    loader.sampler.update([5, 6], [100.0, 100.0])  # pending, for the next epoch
    buffer = io.BytesIO()
    torch.save(loader.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    rest = [b.tolist() for _, _, b in it]
    resumed = make()
    resumed.load_state_dict(state)
    assert np.array_equal(resumed._steering.tracker.multipliers, loader._steering.tracker.multipliers)
    assert [b.tolist() for _, _, b in resumed] == rest
    assert _epoch_indices(resumed) == _epoch_indices(loader)  # the pending losses came along
    with pytest.raises(ValueError, match="loss_sampling"):
        _loader(small_lmdb, shuffle=True, seed=2).load_state_dict(state)


def test_update_without_loss_sampling_says_how(small_lmdb):
    with pytest.raises(ValueError, match=r"loss_sampling=fastload.LossSampling\(\)"):
        _loader(small_lmdb).sampler.update([0], [1.0])


# --- the label audit ---------------------------------------------------------------------------

COLOURS = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)], np.float64)


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """4 colour classes x 40 noisy 16x16 images; a known 10% (16) filed under a wrong class."""
    root = tmp_path_factory.mktemp("flipped") / "data"
    rng = np.random.default_rng(0)
    flips = set(rng.choice(160, 16, replace=False).tolist())
    for i in range(160):
        true = i % 4
        label = (true + 1 + rng.integers(3)) % 4 if i in flips else true
        image = np.clip(COLOURS[true] + rng.normal(0, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / f"c{label}" / f"{i:03d}.png"), image)
    store = str(root) + ".lmdb"
    fastload.pack(root, store, options=fastload.PackOptions(workers=1, progress=False))
    return store, {f"{i:03d}.png" for i in flips}


def test_audit_ranks_flipped_labels_far_above_chance(flipped, tmp_path):
    store, flips = flipped
    loader = fastload.Loader(store, batch_size=32, augment=None, output_dtype="uint8", layout="NCHW",
                             shuffle=True, seed=0, backend="torch", device="cpu", num_threads=0,
                             return_index=True, loss_sampling=LossSampling(steer=False))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=1e-3)
    for _ in range(5):
        for images, labels, idx in loader:
            losses = torch.nn.functional.cross_entropy(model(images.float() / 255), labels, reduction="none")
            optimizer.zero_grad()
            losses.mean().backward()
            optimizer.step()
            loader.sampler.update(idx, losses)
    rows = loader.audit(tmp_path / "audit.csv", top=16)
    precision = sum(os.path.basename(r["path"]) in flips for r in rows) / 16
    print(f"audit precision of the top 10%: {precision:.2f} (chance 0.10)")
    assert precision >= 0.6
    assert [r["rank"] for r in rows] == list(range(1, 17)) and rows[0]["epochs_seen"] == 5
    # the same ranking from a saved history, through the command line
    loader.save_loss_history(tmp_path / "losses.npz")
    assert fastload_cli(["audit", str(tmp_path / "losses.npz"), "-o", str(tmp_path / "cli.csv"), "--top", "16"]) == 0
    with open(tmp_path / "cli.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert [int(r["record"]) for r in written] == [r["record"] for r in rows]
    assert {"persistence", "label", "class", "path"} <= set(written[0])


# --- Lightning -----------------------------------------------------------------------------------

def test_lightning_callback_reports_every_epoch(small_lmdb, capsys):
    lightning = pytest.importorskip("lightning")
    from fastload.integrations.lightning import StallMeterCallback

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 3)

        def training_step(self, batch, index):
            images, labels = batch
            return torch.nn.functional.cross_entropy(self.net(images.float().mean((1, 2))), labels)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    callback = StallMeterCallback()
    loader = _loader(small_lmdb, shuffle=True)
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, callbacks=[callback],
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), loader)
    assert [r.ranks[0].epoch for r in callback.reports] == [0, 1]
    assert all(r.ranks[0].batches == len(loader) for r in callback.reports)
    assert "rank 0 epoch 1: 6 batches" in capsys.readouterr().out
    assert "loader/stall_fraction" in trainer.callback_metrics
