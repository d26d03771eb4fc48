"""The before/after training examples run end to end on generated data."""

from __future__ import annotations

import os
import subprocess
import sys

import fastload
from fastload.sample import SampleSpec, make_sample_folder

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def _run(script: str, *args: str) -> str:
    cmd = [sys.executable, os.path.join(EXAMPLES, script), *args]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return done.stdout


def test_before_and_after_examples_train(tmp_path):
    data = tmp_path / "data"
    make_sample_folder(data, SampleSpec(num_classes=2, per_class=40, short_side=(64, 96)), workers=1)
    fastload.pack(data, options=fastload.PackOptions(workers=1, progress=False))
    before = _run("train_before.py", str(data), "--epochs", "1", "--image-size", "32", "--workers", "0")
    after = _run("train_after.py", str(tmp_path / "data.lmdb"), "--epochs", "2", "--image-size", "32",
                 "--backend", "torch", "--threads", "0")
    assert "epoch 0: loss" in before
    assert "epoch 1: loss" in after and "torch backend" in after


def test_competition_example_writes_a_submission(tmp_path):
    data = tmp_path / "data"
    make_sample_folder(data, SampleSpec(num_classes=3, per_class=15, short_side=(48, 64)), workers=1)
    fastload.pack(data, options=fastload.PackOptions(workers=1, progress=False))
    cmd = [sys.executable, os.path.join(EXAMPLES, "competition.py"), str(tmp_path / "data.lmdb"), str(data),
           "--epochs", "1", "--image-size", "32", "--folds", "3"]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert "fold 0 validation accuracy" in done.stdout
    rows = (tmp_path / "submission.csv").read_text().splitlines()
    assert rows[0] == "id,label" and len(rows) == 25
