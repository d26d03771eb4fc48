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


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


TINY = ["--classes", "2", "--per-class", "12", "--short-side", "48,64", "--image-size", "32",
        "--threads", "1", "--batch-sizes", "8", "--rounds", "2", "--images-per-round", "16",
        "--warmup-batches", "1", "--timeout", "60"]
MODEL = "shufflenet_v2_x0_5"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> BenchData:
    work = tmp_path_factory.mktemp("bench-work")
    return prepare_data(str(work), spec=sample_spec(2, 12, short_side=(48, 64)))


def test_quick_run_writes_json_csv_and_plots_with_a_row_per_loader(tiny_data, tmp_path, capsys):
    out = tmp_path / "results"
    assert run.main(["--quick", *TINY, "--no-isolate", "--work", _work(tiny_data),
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
            assert row["output"] == f"8x3x32x32 float32 {spec.device}"  # GPU rows: on the GPU
            assert row["images_per_s"] > 0 and row["peak_rss_mb"] > 0 and row["first_batch_s"] > 0
            assert row["images_per_s_min"] <= row["images_per_s"] <= row["images_per_s_max"]
            assert 0 < row["ceiling_fraction"] and row["ceiling_kind"] == _kind(spec.device)
            # the iterating thread's CPU per image, and the feed rate it allows, for every row
            assert row["host_us_per_image"] > 0
            assert math.isclose(row["feed_ceiling_images_per_s"], 1e6 / row["host_us_per_image"])
            assert ("gpu_mem_peak_mb" in row) == (spec.device == "cuda")
        assert row["loader"] in printed
    assert result["data"]["count"] == 24 and {"lmdb", "hdf5"} <= set(result["data"]["pack"])
    assert result["ceiling"]["ceiling_images_per_s"] > 0
    assert "torchvision" in result["summary"]["best_per_loader"]
    measured = [r["loader"] for r in rows if r["status"] == "ok" and r["family"].startswith("fastload")]
    assert sorted(result["summary"]["fastload_rows"]) == sorted(measured)
    assert "us/img" in printed and "feed/s" in printed

    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["loader"] for r in table] == expected
    assert set(report.CSV_COLUMNS) == set(table[0])
    # one thread count and one batch size: a bar per loader, no line through a single point
    assert (out / "throughput_by_loader.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "throughput_vs_threads.png").exists() and not (out / "throughput_vs_batch_size.png").exists()
    assert "best fastload on cpu" in printed and "fastload fastload" not in printed


def _kind(device: str) -> str:
    return "gpu" if device == "cuda" else "cpu"


def _work(data: BenchData) -> str:
    """The fixture's work folder: its generated images and stores are reused, not made again."""
    return os.path.dirname(data.folder)


@pytest.mark.skipif(loaders.LOADERS["torchvision"].unavailable() is not None, reason="no torchvision")
def test_training_run_reports_each_loader_against_the_synthetic_speed(tiny_data, tmp_path, capsys):
    out = tmp_path / "results"
    wanted = [n for n in ("opencv-folder", "fastload-dali-lmdb") if not loaders.LOADERS[n].unavailable()]
    # Any torchvision model: a small one keeps the CPU test short (resnet18 is the documented one).
    assert run.main(["--quick", *TINY, "--no-isolate", "--train", MODEL, "--train-only",
                     "--train-device", "cpu", "--train-image-size", "32", "--train-batch-sizes", "8",
                     "--train-images-per-round", "16", "--loaders", ",".join(wanted),
                     "--work", _work(tiny_data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    assert result["results"] == [] and not (out / "results.csv").exists()  # --train-only
    training = result["training"]
    rows = training["results"]
    assert [r["loader"] for r in rows] == ["synthetic", *wanted, "synthetic"]  # first and last
    reference = max(rows[0]["images_per_s"], rows[-1]["images_per_s"])
    assert max(rows[0]["busy_fraction"], rows[-1]["busy_fraction"]) == 1.0
    for row in rows:
        assert row["status"] == "ok", row
        assert row["train_model"] == MODEL and row["train_device"] == "cpu"
        assert row["images_per_s"] > 0 and row["host_us_per_image"] > 0 and row["first_batch_s"] > 0
        assert row["synthetic_images_per_s"] == reference
        assert math.isclose(row["busy_fraction"], row["images_per_s"] / reference)
    assert training["summary"]["model"] == MODEL and training["summary"]["target_busy_fraction"] is None
    with open(out / "training.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["loader"] for r in table] == ["synthetic", *wanted, "synthetic"]
    assert set(report.TRAIN_CSV_COLUMNS) == set(table[0])
    assert (out / "training_vs_synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "busy%" in printed and f"training {MODEL} on cpu (float32)" in printed


def test_the_synthetic_reference_only_runs_with_a_model():
    with pytest.raises(ValueError, match="needs a model"):
        Grid(loaders=("synthetic",), threads=(1,), batch_sizes=(8,))
    grid = Grid(loaders=("synthetic", "torchvision"), threads=(1, 2), batch_sizes=(8,),
                train_model="resnet18")
    assert [c.threads for c in grid.configs("synthetic")] == [2]  # threads do not apply to it
    assert [c.threads for c in grid.configs("torchvision")] == [1, 2]
    assert "synthetic" not in loaders.default_loaders()
    assert "fastload-dali-lmdb-procs" in loaders.LOADERS and "fastload-dali-lmdb-procs" not in loaders.default_loaders()
    with pytest.raises(SystemExit, match="reference of --train"):
        run.main(["--loaders", "synthetic"])


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


def _row(loader, family, rate, device="cpu", batch=64, host=20.0):
    return {"loader": loader, "family": family, "device": device, "status": "ok", "threads": 2,
            "batch_size": batch, "images_per_s": rate, "images_per_s_min": rate,
            "images_per_s_max": rate, "host_us_per_image": host,
            "feed_ceiling_images_per_s": 1e6 / host}


def test_summary_compares_fastload_with_the_baseline_dali_and_the_ceiling():
    rows = [_row("torchvision", "torchvision", 500), _row("dali-file", "dali", 900),
            _row("fastload-dali-lmdb", "fastload-dali", 1300),
            {"loader": "fastload-torch-lmdb", "family": "fastload-torch", "status": "skipped"}]
    summary = report.summarize(rows, {"ceiling_images_per_s": 2800.0})
    assert summary["fastload_best_cpu"]["loader"] == "fastload-dali-lmdb"
    assert math.isclose(summary["fastload_vs_baseline"], 2.6)
    assert summary["targets"] == {"beats_2.5x_baseline": True, "beats_dali_file": True,
                                  "host_le_40us_per_image": True}
    assert math.isclose(rows[2]["ceiling_fraction"], 1300 / 2800) and rows[2]["ceiling_kind"] == "cpu"
    assert "2.60x" in report.format_summary(summary, None)
    assert "skipped" in report.format_table(rows)


GPU_CEILING = {"by_batch_size": {"256": {"by_hw_decoder_load": {"0": 15000.0, "0.65": 24000.0},
                                         "best_hw_decoder_load": 0.65,
                                         "ceiling_images_per_s": 24000.0}},
               "threads": 16, "method": "test"}


def test_gpu_rows_are_fastload_rows_held_to_the_gpu_decoder_ceiling():
    rows = [_row("torchvision", "torchvision", 2800, batch=256),
            _row("dali-file-gpu", "dali", 22000, "cuda", 256),
            _row("fastload-dali-lmdb-gpu", "fastload-dali", 23000, "cuda", 256, host=31.0),
            _row("fastload-dali-hdf5-gpu", "fastload-dali", 12000, "cuda", 256, host=55.0),
            _row("fastload-dali-lmdb-raw-gpu", "fastload-dali", 9000, "cuda", 128)]  # no ceiling at 128
    summary = report.summarize(rows, {"ceiling_images_per_s": 1500.0}, GPU_CEILING)
    assert math.isclose(rows[2]["ceiling_fraction"], 23000 / 24000) and rows[2]["ceiling_kind"] == "gpu"
    assert rows[4]["ceiling_fraction"] is None  # never the CPU's ceiling for a GPU row
    assert rows[0]["ceiling_kind"] == "cpu"
    assert summary["fastload_best_cpu"] is None
    assert summary["fastload_best_gpu"]["loader"] == "fastload-dali-lmdb-gpu"
    assert set(summary["fastload_rows"]) == {r["loader"] for r in rows[2:]}
    assert math.isclose(summary["fastload_gpu_vs_dali_file_gpu"], 23000 / 22000)
    assert summary["targets"]["gpu_beats_dali_file_gpu"] is True
    assert summary["targets"]["gpu_every_store_90pct_of_ceiling"] is None  # raw: no ceiling
    assert summary["targets"]["host_le_40us_per_image"] is False  # hdf5: 55 us
    text = report.format_summary(summary, None, GPU_CEILING)
    assert "no fastload loader was measured" not in text
    for name in summary["fastload_rows"]:
        assert f"\n{name} " in text and f"fastload {name}" not in text  # the name once, not "fastload fastload-..."
    assert "MISSES the target <= 40" in text  # the hdf5 row's 55 us
    assert "1.05x: meets the target (>= 1x)" in text
    assert "GPU decode ceiling at batch 256: 24000 img/s (hw_decoder_load 0.65" in text
    assert "96% of the GPU ceiling" in text and "vs DALI's own file reader on the GPU" in text


def test_no_fastload_row_measured_is_said_so():
    summary = report.summarize([_row("torchvision", "torchvision", 500)], None)
    assert "no fastload loader was measured" in report.format_summary(summary, None)


def test_training_summary_gives_each_loader_its_busy_fraction():
    def train_row(loader, family, rate, device="cuda"):
        return {**_row(loader, family, rate, device, 256), "image_size": 224,
                "train_model": "resnet50", "train_device": "cuda"}

    rows = [train_row("synthetic", "synthetic", 3900), train_row("torchvision", "torchvision", 2000, "cpu"),
            train_row("fastload-dali-lmdb-gpu", "fastload-dali", 3800), train_row("synthetic", "synthetic", 4000)]
    alone = [{**_row("fastload-dali-lmdb-gpu", "fastload-dali", 23000, "cuda", 256), "image_size": 224}]
    summary = report.summarize_training(rows, alone, "resnet50")
    assert [r["busy_fraction"] for r in rows] == [0.975, 0.5, 0.95, 1.0]  # the faster reference
    assert rows[2]["loader_images_per_s"] == 23000 and rows[1]["loader_images_per_s"] is None
    assert summary["fastload_best"]["loader"] == "fastload-dali-lmdb-gpu" and summary["meets_target"]
    assert math.isclose(summary["fastload_vs_baseline"], 1.9)
    text = report.format_training_summary(summary)
    assert "95% of the synthetic-data speed (target >= 95% for resnet50)" in text
    assert "bf16 autocast, channels_last" in text and "synthetic" in report.format_training_table(rows)


@pytest.mark.skipif(_has_cuda(), reason="checks the CPU-only answer")
def test_gpu_memory_reads_nothing_without_a_gpu():
    from benchmarks.harness import GpuMemory

    assert GpuMemory().used() is None


@pytest.mark.gpu
@pytest.mark.skipif(loaders.LOADERS["dali-file-gpu"].unavailable() is not None,
                    reason=str(loaders.LOADERS["dali-file-gpu"].unavailable()))
def test_gpu_decode_ceiling_measures_every_split(tiny_data):
    from benchmarks.ceilings import gpu_decode_ceiling_isolated

    ceiling = gpu_decode_ceiling_isolated(tiny_data.folder, batch_sizes=[8], threads=2,
                                          hw_decoder_loads=[0.0, 1.0], min_seconds=0.2, timeout_s=120)
    entry = ceiling["by_batch_size"]["8"]
    assert set(entry["by_hw_decoder_load"]) == {"0", "1"} and entry["ceiling_images_per_s"] > 0
    assert entry["ceiling_images_per_s"] == max(entry["by_hw_decoder_load"].values())


@pytest.mark.gpu
@pytest.mark.skipif(loaders.LOADERS["fastload-dali-lmdb-gpu"].unavailable() is not None,
                    reason=str(loaders.LOADERS["fastload-dali-lmdb-gpu"].unavailable()))
def test_a_gpu_training_row_reports_gpu_memory(tiny_data):
    config = BenchConfig("fastload-dali-lmdb-gpu", threads=2, batch_size=8, image_size=32,
                         warmup_batches=2, batches_per_round=2, rounds=2, train_model="resnet18",
                         train_device="cuda")
    row = run_config(config, tiny_data, timeout_s=120, isolate=True)
    assert row["status"] == "ok", row
    assert row["output"] == "8x3x32x32 float32 cuda" and row["train_device"] == "cuda"
    assert row["torch_cuda_peak_mb"] > 0 and row["host_us_per_image"] > 0


@pytest.fixture(scope="module")
def tiny_other_data(tmp_path_factory) -> dict[str, BenchData]:
    """The op lists' other data kinds, tiny: 16-bit gray PNGs, 6-channel uint16 and RGB float32 arrays."""
    from dataclasses import replace

    work = str(tmp_path_factory.mktemp("bench-other"))
    gray = replace(sample_spec(2, 12, short_side=(48, 64)), image_format="png16")
    return {"gray16": prepare_data(work, spec=gray, formats=("lmdb",)),
            "ch6": prepare_data(work, spec=data_module.ArraySpec(2, 12, side=48), formats=("lmdb",)),
            "float32": prepare_data(work, spec=data_module.ArraySpec(2, 12, side=48, channels=3, dtype="float32"),
                                    formats=("lmdb",))}


@pytest.mark.skipif(loaders.LOADERS["torchvision"].unavailable() is not None, reason="no torchvision")
@pytest.mark.skipif(loaders.LOADERS["fastload-dali-lmdb"].unavailable() is not None,
                    reason=str(loaders.LOADERS["fastload-dali-lmdb"].unavailable()))
def test_op_lists_compare_every_list_with_torchvision_on_the_same_ops(tiny_data, tiny_other_data, capsys):
    from benchmarks import op_lists

    data = {"photos": tiny_data, **tiny_other_data}
    # one list of each data kind and output, through every loader; the "-raw" lists are their
    # lists' ops on a raw store (read as test_multichannel and test_host_pool read raw stores) and
    # the other photo lists differ in their ops only (test_op_lists_build_the_same_ops_on_both_sides;
    # custom ops and eval run through both backends in test_dali_backend): left out here (~7 s a list)
    lists = ["preset", "uint8", "gray16", "ch6", "float32"]
    results = op_lists.measure(data, lists=lists, size=32, threads=1, batch_size=8, rounds=1, batches=1, settle=0.0)
    assert "failed" not in capsys.readouterr().out
    assert list(results) == lists
    for by in results.values():
        assert set(by) == {"torchvision", "fastload dali", "fastload torch"}
        assert by["torchvision"]["ratio"] == 1.0 and all(r["images_per_s"] > 0 for r in by.values())
        assert len({r["output"] for r in by.values()}) == 1, by  # the same work on every side
    outputs = {name: by["torchvision"]["output"] for name, by in results.items()}
    assert outputs["uint8"] == "8x3x32x32 uint8" and outputs["preset"] == "8x3x32x32 float32"
    assert outputs["gray16"] == "8x1x37x37 float32" and outputs["ch6"] == "8x6x32x32 float32"
    assert outputs["float32"] == "8x3x32x32 float32"
    printed = op_lists.table(results)
    assert "| preset | ImageFolder" in printed and "| ch6 | Dataset: np.load" in printed


@pytest.mark.skipif(loaders.LOADERS["torchvision"].unavailable() is not None, reason="no torchvision")
@pytest.mark.parametrize("name", ["colorjitter", "radiology", "affine", "trivialaugment", "randaugment", "blur",
                                  "custom", "eval", "resize-crop"])
def test_op_lists_build_the_same_ops_on_both_sides(name):
    """The photo lists the loader test leaves out: fastload's ops and torchvision's make one
    image into the same shape and type."""
    import torch
    from PIL import Image

    from benchmarks import op_lists
    from fastload import ops

    image = (np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8)
    got = ops.run_numpy(op_lists.fastload_ops(name, 32), [image], [np.random.default_rng(0)])[0]
    want = op_lists.torchvision_ops(name, 32)(Image.fromarray(image))
    assert isinstance(want, torch.Tensor) and tuple(want.shape) == (3, 32, 32) and want.dtype == torch.float32
    assert got.shape == (32, 32, 3) and got.dtype == np.float32


@pytest.mark.skipif(loaders.LOADERS["fastload-dali-lmdb"].unavailable() is not None,
                    reason=str(loaders.LOADERS["fastload-dali-lmdb"].unavailable()))
def test_op_lists_add_a_column_for_the_host_stage_in_processes(tiny_data):
    from benchmarks import op_lists

    built = op_lists._loaders("custom", tiny_data.folder, tiny_data.stores["lmdb"], 32, 1, 8, host_workers=1)
    loader = built[op_lists.HOST_PROCESSES]()  # the DALI backend, its host stage in one process
    images, _ = next(iter(loader))
    assert type(loader._get_backend()._engines[0].host).__name__ == "HostPool"
    assert tuple(images.shape) == (8, 3, 32, 32)
    row = {"images_per_s": 100.0, "rounds": [100.0], "ratio": 2.0, "ratio_min": 2.0, "ratio_max": 2.0, "output": ""}
    printed = op_lists.table({"custom": {"torchvision": {**row, "ratio": 1.0}, "fastload dali": row,
                                         "fastload torch": row, op_lists.HOST_PROCESSES: row}})
    assert "DALI, host_workers | ratio (range) |" in printed.splitlines()[0]
    assert printed.splitlines()[2].count("2.00x") == 3


def test_op_lists_data_kinds_are_what_each_list_says(tiny_other_data):
    import fastload

    gray, cells = (fastload.open_store(tiny_other_data[k].stores["lmdb"]) for k in ("gray16", "ch6"))
    assert (gray.channels, gray.decode(0).dtype) == (1, np.uint16)
    assert (cells.channels, cells.decode(0).dtype, cells.decode(0).shape) == (6, np.uint16, (48, 48, 6))
    floats = fastload.open_store(tiny_other_data["float32"].stores["lmdb"])
    assert (floats.channels, floats.decode(0).dtype) == (3, np.float32) and 0 <= floats.decode(0).min()
    assert len(gray) == len(cells) == len(floats) == 24


def test_gil_seconds_reach_every_configuration_and_the_table_shows_the_column():
    """run.py --gil-seconds: issue 20's GIL target is read from run.py's table."""
    grid = Grid(loaders=("torchvision", "fastload-dali-lmdb"), threads=(1, 2), batch_sizes=(8,), gil_seconds=1.5)
    assert {c.gil_seconds for loader in grid.loaders for c in grid.configs(loader)} == {1.5}
    row = {"loader": "fastload-dali-lmdb", "threads": 2, "batch_size": 8, "status": "ok", "images_per_s": 100.0,
           "images_per_s_min": 90.0, "images_per_s_max": 110.0, "host_us_per_image": 20.0, "gil_us_per_image": 57.0}
    table = report.format_table([row, {**row, "gil_us_per_image": None}])
    header, _, first, second = table.splitlines()[:4]
    assert "GIL us" in header and "57" in first.split() and "-" in second.split()
    args = run._resolve(run.build_parser().parse_args(["--loaders", "torchvision", "--threads", "2",
                                                       "--batch-sizes", "8", "--gil-seconds", "2"]))
    alone, _ = run._grids(args)
    assert alone is not None and alone.gil_seconds == 2.0
