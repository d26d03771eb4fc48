"""The benchmark suite: a real run on a tiny generated set, and its pieces."""

from __future__ import annotations

import csv
import json
import math
import os
import sys

import numpy as np
import pytest

# benchmarks/ is not part of the installed package; plain `pytest` does not put the repo root
# on sys.path (`python -m pytest` does).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import data as data_module  # noqa: E402
from benchmarks import loaders, report, run  # noqa: E402
from benchmarks.config import BenchConfig, BenchData  # noqa: E402
from benchmarks.data import prepare_data, sample_spec  # noqa: E402
from benchmarks.suite import Grid, run_config, run_suite  # noqa: E402

TINY = ["--classes", "2", "--per-class", "12", "--short-side", "48,64", "--image-size", "32",
        "--threads", "1", "--batch-sizes", "8", "--rounds", "2", "--images-per-round", "16",
        "--warmup-batches", "1", "--timeout", "60"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> BenchData:
    work = tmp_path_factory.mktemp("bench-work")
    return prepare_data(str(work), spec=sample_spec(2, 12, short_side=(48, 64)))


def test_quick_run_writes_json_csv_and_plots_with_a_row_per_loader(tmp_path, capsys):
    out = tmp_path / "results"
    assert run.main(["--quick", *TINY, "--no-isolate", "--work", str(tmp_path / "work"),
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = loaders.default_loaders()

    result = json.loads((out / "results.json").read_text())
    rows = result["results"]
    assert [r["loader"] for r in rows] == expected  # one config per loader, or one skipped row
    for row in rows:
        spec = loaders.LOADERS[row["loader"]]
        if spec.unavailable():
            assert row["status"] == "skipped" and row["note"] == spec.unavailable()
        else:
            assert row["status"] == "ok", row
            assert row["output"] == "8x3x32x32 float32 cpu"
            assert row["images_per_s"] > 0 and row["peak_rss_mb"] > 0 and row["first_batch_s"] > 0
            assert row["images_per_s_min"] <= row["images_per_s"] <= row["images_per_s_max"]
            assert 0 < row["ceiling_fraction"]
        assert row["loader"] in printed
    assert result["data"]["count"] == 24 and {"lmdb", "hdf5"} <= set(result["data"]["pack"])
    assert result["ceiling"]["ceiling_images_per_s"] > 0
    assert "torchvision" in result["summary"]["best_per_loader"]

    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["loader"] for r in table] == expected
    assert set(report.CSV_COLUMNS) == set(table[0])
    for name in ("throughput_vs_threads.png", "throughput_vs_batch_size.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_configuration_runs_in_its_own_process(tiny_data):
    # Rounds long enough (~0.1 s) for CPU time to register above the scheduler's 10 ms tick.
    config = BenchConfig("opencv-folder", threads=1, batch_size=8, image_size=32,
                         warmup_batches=1, batches_per_round=40, rounds=2)
    row = run_config(config, tiny_data, timeout_s=60, isolate=True)
    assert row["status"] == "ok", row
    assert row["loader"] == "opencv-folder" and row["threads"] == 1 and row["batch_size"] == 8
    assert len(row["rates"]) == 2 and row["cpu_cores_used"] > 0 and row["steady_pss_mb"] > 0


def test_a_loader_that_cannot_run_gives_one_skipped_row(tiny_data, monkeypatch):
    monkeypatch.setitem(loaders._REQUIREMENTS, "dali", lambda: "dali not installed")
    grid = Grid(loaders=("dali-file", "fastload-dali-lmdb"), threads=(1, 2), batch_sizes=(8,))
    rows = run_suite(grid, tiny_data)
    assert [(r["loader"], r["status"], r["note"]) for r in rows] == [
        ("dali-file", "skipped", "dali not installed"),
        ("fastload-dali-lmdb", "skipped", loaders.LOADERS["fastload-dali-lmdb"].unavailable()),
    ]


def test_batches_larger_than_the_data_are_skipped_not_run(tiny_data):
    grid = Grid(loaders=("opencv-folder",), threads=(1,), batch_sizes=(64,))
    [row] = run_suite(grid, tiny_data)
    assert row["status"] == "skipped" and "less than one batch" in row["note"]


def test_tar_shards_hold_every_image_once_with_its_label(tiny_data, tmp_path):
    import tarfile

    stats = data_module.write_tar_shards(tiny_data.folder, str(tmp_path / "wds"), num_shards=4)
    members = {}
    for shard in sorted((tmp_path / "wds").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    paths, labels = loaders.list_image_folder(tiny_data.folder)
    assert stats["images"] == len(paths) == 24 and len(members) == 2 * 24
    for i, (path, label) in enumerate(zip(paths, labels)):
        assert members[f"{i:08d}.cls"] == str(label).encode()
        assert members[f"{i:08d}.jpg"] == open(path, "rb").read()


@pytest.mark.skipif(loaders.LOADERS["webdataset"].unavailable() is not None,
                    reason="webdataset not installed (an optional peer)")
def test_webdataset_peer_runs_where_installed(tiny_data, tmp_path):
    data = prepare_data(str(tmp_path), folder=tiny_data.folder, formats=(), webdataset=True)
    config = BenchConfig("webdataset", threads=1, batch_size=8, image_size=32,
                         warmup_batches=1, batches_per_round=2, rounds=2)
    assert run_config(config, data, isolate=False)["status"] == "ok"


def test_grid_is_every_thread_count_by_every_batch_size():
    grid = Grid(loaders=("torchvision",), threads=(1, 2), batch_sizes=(32, 256),
                images_per_round=512)
    configs = grid.configs("torchvision")
    assert [(c.threads, c.batch_size, c.batches_per_round) for c in configs] == [
        (1, 32, 16), (1, 256, 2), (2, 32, 16), (2, 256, 2)]
    with pytest.raises(ValueError, match="unknown loaders"):
        Grid(loaders=("nope",), threads=(1,), batch_sizes=(8,))


def test_quick_is_one_configuration_per_loader():
    args = run._resolve(run.build_parser().parse_args(["--quick"]))
    assert len(args.threads) == 1 and args.batch_sizes == (64,)
    assert args.classes * args.per_class >= 3 * 64  # several batches per epoch


@pytest.mark.parametrize("height,width", [(375, 500), (40, 400), (400, 40), (8, 8)])
def test_random_resized_crop_box_stays_inside_the_image(height, width):
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = loaders.random_resized_crop_box(rng, height, width)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h and w
        if (height, width) == (375, 500):
            assert 0.08 * height * width * 0.9 <= h * w and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_summary_compares_fastload_with_the_baseline_dali_and_the_ceiling():
    def row(loader, family, rate):
        return {"loader": loader, "family": family, "device": "cpu", "status": "ok", "threads": 2,
                "batch_size": 64, "images_per_s": rate, "images_per_s_min": rate,
                "images_per_s_max": rate}

    rows = [row("torchvision", "torchvision", 500), row("dali-file", "dali", 900),
            row("fastload-dali-lmdb", "fastload-dali", 1300),
            {"loader": "fastload-torch-lmdb", "family": "fastload-torch", "status": "skipped"}]
    summary = report.summarize(rows, {"ceiling_images_per_s": 2800.0})
    assert summary["fastload_best_cpu"]["loader"] == "fastload-dali-lmdb"
    assert math.isclose(summary["fastload_vs_baseline"], 2.6)
    assert summary["targets"] == {"beats_2.5x_baseline": True, "beats_dali_file": True}
    assert math.isclose(rows[2]["ceiling_fraction"], 1300 / 2800)
    assert "2.60x" in report.format_summary(summary, None)
    assert "skipped" in report.format_table(rows)
