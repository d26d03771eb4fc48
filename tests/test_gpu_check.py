"""benchmarks/gpu_check.py: the one-command check of a GPU machine, run at its smoke size (on the
CPU here: every step's CPU twin), and the pieces its report is made of."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import check_report, gpu_check  # noqa: E402
from benchmarks.gil import gil_per_image, parse_raw_samples, py_spy  # noqa: E402


def test_smoke_run_measures_every_step_and_writes_its_report(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    code = gpu_check.main(["--smoke", "--out", str(out), "--work", str(work), "--threads", "2"])
    report = json.loads((out / "gpu_check.json").read_text())
    steps = report["steps"]
    assert list(steps) == list(gpu_check.STEPS)
    problems = {n: s for n, s in steps.items() if s["status"] not in ("ok", "skipped")}
    assert code == 0 and not problems, problems
    cuda = report["meta"]["device"] == "cuda"
    skipped = {n for n, s in steps.items() if s["status"] == "skipped"}
    assert skipped == (set() if cuda else {"gpu-tests", "ceiling"})
    # every loader measured: readers.file and three stores (CUDA hidden: then the LMDB store's host
    # stage on every thread, the raw store on the torch backend, the LMDB store's host stage in processes)
    for key in ("loaders", "cpu_only"):
        rows = report[key]
        assert [r["status"] for r in rows] == ["ok"] * (4 if key == "loaders" else 7), rows
        assert all(r["images_per_s"] > 0 and r["first_batch_s"] > 0 for r in rows)
    every, torch_raw, procs = report["cpu_only"][-3:]
    assert every["loader"] == "fastload-dali-lmdb" and every["host_margin"] == gpu_check.EVERY_THREAD
    assert torch_raw["loader"] == "fastload-torch-lmdb-raw" and procs["loader"] == "fastload-dali-lmdb-procs"
    assert any("on every thread" in t["target"] for t in report["targets"])
    assert any("raw store on the torch backend" in t["target"] for t in report["targets"])
    assert any("host stage in processes" in t["target"] for t in report["targets"])
    assert report["restart"]["engines_built"] == 1
    assert set(report["custom_ops"]["results"]) == set(gpu_check.CUSTOM_OPS)
    training = report["training"]["resnet18"]["summary"]["fastload_best"]
    assert 0 < training["busy_fraction"]
    assert report["tune"]["best"]["batch_size"] > 0
    assert report["tests"]["suite"]["counts"]["passed"] > 0
    assert report["targets"] and all(t["met"] in (True, False, None) for t in report["targets"])
    markdown = (out / "gpu_check.md").read_text()
    assert set(report["op_lists"]["results"]) == set(gpu_check.SMOKE.op_lists)
    for heading in ("## Targets", "## Steps", "### Restart", "### Custom ops", "### Training",
                    "### Tuner", "### CUDA hidden", "### Op lists"):
        assert heading in markdown
    assert "restart" in (out / "gpu_check.log").read_text()


def test_steps_can_be_chosen_and_the_data_comes_with_them(tmp_path):
    out = tmp_path / "out"
    assert gpu_check.main(["--smoke", "--out", str(out), "--work", str(tmp_path / "w"),
                           "--steps", "restart", "--threads", "1"]) == 0
    steps = json.loads((out / "gpu_check.json").read_text())["steps"]
    assert list(steps) == ["data", "restart"]


def test_a_run_without_cuda_needs_smoke(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="--smoke"):
        gpu_check.main(["--out", str(tmp_path)])


def test_a_step_out_of_budget_is_skipped_and_said_so(tmp_path):
    out = tmp_path / "out"
    gpu_check.main(["--smoke", "--out", str(out), "--work", str(tmp_path / "w"), "--budget", "1",
                    "--steps", "env"])
    steps = json.loads((out / "gpu_check.json").read_text())["steps"]
    assert steps["env"]["status"] == "skipped" and "budget" in steps["env"]["note"]


def test_pytest_summary_reads_the_closing_line_and_the_failures():
    output = ("....F.s\nFAILED tests/test_x.py::test_y - AssertionError\n"
              "=========== 1 failed, 5 passed, 1 skipped in 3.21s ===========\n")
    summary = check_report.pytest_summary(output)
    assert summary["counts"] == {"failed": 1, "passed": 5, "skipped": 1}
    assert summary["failures"] == ["tests/test_x.py::test_y - AssertionError"]
    assert summary["line"] == "1 failed, 5 passed, 1 skipped in 3.21s"


def test_pytest_summary_of_a_stopped_run_counts_its_progress():
    summary = check_report.pytest_summary("..F.....s. [ 40%]\n....E\n")
    assert summary["counts"] == {"passed": 12, "failed": 1, "errors": 1, "skipped": 1}
    assert summary["line"].startswith("stopped before the end")


def _row(loader: str, batch: int, rate: float, **extra) -> dict:
    return {"loader": loader, "batch_size": batch, "threads": 16, "status": "ok", "images_per_s": rate,
            "images_per_s_min": rate, "images_per_s_max": rate, "host_us_per_image": 20.0,
            "first_batch_s": 1.0, **extra}


def test_targets_hold_each_store_to_the_ceiling_of_its_batch_size():
    report = {"meta": {"device": "cuda", "threads": 16},
              "ceiling": {"hw_decoder_loads": [0.0, 1.0], "by_batch_size": {
                  "256": {"by_hw_decoder_load": {"0": 15000.0, "1": 20000.0}, "best_hw_decoder_load": 1.0,
                          "ceiling_images_per_s": 20000.0},
                  "512": {"by_hw_decoder_load": {"0": 16000.0, "1": 22000.0}, "best_hw_decoder_load": 1.0,
                          "ceiling_images_per_s": 22000.0}}},
              "loaders": [_row("dali-file-gpu", 256, 19000), _row("fastload-dali-lmdb-gpu", 256, 19500),
                          _row("dali-file-gpu", 512, 21000), _row("fastload-dali-lmdb-gpu", 512, 19000),
                          _row("fastload-dali-hdf5-gpu", 256, 18500, gil_us_per_image=30.0),
                          _row("fastload-dali-lmdb-raw-gpu", 256, 21000, gil_us_per_image=70.0)],
              "restart": {"first_batch_s": 1.0, "restart_s": 0.05, "restarts_s": [0.05], "engines_built": 1}}
    met = {t["target"]: t["met"] for t in check_report.targets(report)}
    assert met["lmdb >= 90% of the nvJPEG ceiling"] is False  # 512: 19000 / 22000 = 86%
    assert met["hdf5 >= 90% of the nvJPEG ceiling"] is True
    assert met["raw LMDB >= encoded LMDB"] is True
    assert met["fastload LMDB >= DALI readers.file"] is False  # 512: 0.90x
    assert met["GIL <= 60 us/img (cuda)"] is False  # raw: 70
    assert met["first batch after a broken-off pass < 0.3 s"] is True
    assert "**no**" in check_report.markdown({**report, "steps": {}, "targets": check_report.targets(report)})


def test_cpu_only_targets_pair_the_raw_store_on_both_backends():
    """CUDA hidden, the raw store on the torch backend is reported beside the DALI backend's row."""
    report = {"meta": {"device": "cpu", "threads": 16},
              "cpu_only": [_row("dali-file", 256, 4000), _row("fastload-dali-lmdb-raw", 256, 9000, gil_us_per_image=50.0),
                           _row("fastload-torch-lmdb-raw", 256, 11000, gil_us_per_image=8.0)]}
    by = {t["target"]: t for t in check_report.targets(report)}
    pair = by["CUDA hidden: the raw store on the torch backend vs the DALI backend"]
    assert pair["met"] is None and pair["measured"] == "11000 vs 9000 img/s, GIL 8 vs 50 us/img"


def test_cpu_only_targets_pair_the_host_stage_in_processes_with_its_threads():
    report = {"meta": {"device": "cpu", "threads": 16},
              "cpu_only": [_row("fastload-dali-lmdb", 256, 9000, gil_us_per_image=60.0),
                           _row("fastload-dali-lmdb-procs", 256, 10000, gil_us_per_image=25.0)]}
    by = {t["target"]: t for t in check_report.targets(report)}
    pair = by["CUDA hidden: the LMDB store's host stage in processes vs on threads"]
    assert pair["met"] is None and pair["measured"] == "10000 vs 9000 img/s, GIL 25 vs 60 us/img"


def test_raw_samples_are_summed_over_stacks():
    text = "main (a.py:1);f (a.py:2) 12\nthread (b.py:3) 5\n\nbad line\n"
    assert parse_raw_samples(text) == 17


@pytest.mark.skipif(py_spy() is None, reason="needs py-spy (pip install py-spy)")
def test_gil_time_per_image_is_what_the_draws_hold():
    def draw() -> int:  # holds the GIL ~1 ms per image, then lets it go ~1 ms
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        time.sleep(0.001)
        return 1

    result = gil_per_image(draw, 2)
    assert "gil_note" not in result, result
    assert 400 <= result["gil_us_per_image"] <= 1600, result
