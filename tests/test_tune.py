"""fastload.tune: the search logic on a simulated loader, and a real run through the CLI."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

import fastload
from fastload import cli, tune
from fastload.sample import SampleSpec, make_sample_folder


class FakeStore:
    labels = np.zeros(1000, np.int64)

    def __len__(self) -> int:
        return len(self.labels)


class SimulatedLoader:
    """Sleeps ``cost(settings)`` seconds per image, so its speed is known in advance."""

    def __init__(self, cost: float, batch_size: int) -> None:
        self.cost, self.batch_size, self.closed = cost, batch_size, False

    def __iter__(self):
        for _ in range(4):
            time.sleep(self.cost * self.batch_size)
            yield None, list(range(self.batch_size))

    def close(self) -> None:
        self.closed = True


def _simulate(cost_of):
    built = []

    def make_loader(**settings):
        built.append(SimulatedLoader(cost_of(settings), settings["batch_size"]))
        return built[-1]
    return make_loader, built


FAST = {"images_per_round": 32, "rounds": 2, "warmup_batches": 1}


def test_finds_the_fastest_setting_and_reports_its_gain():
    defaults = tune.default_settings()
    # 2x faster with 3 threads, 2x again with prefetch 4, whatever the batch size.
    make_loader, built = _simulate(lambda s: 4e-4 / (1 + (s["num_threads"] == 3))
                                   / (1 + (s["prefetch"] == 4)))
    result = tune.tune(FakeStore(), threads=[1, 3], batch_sizes=[defaults["batch_size"]],
                       prefetch=[1, 4], host_workers=[], make_loader=make_loader, **FAST)
    assert result.best == {**defaults, "num_threads": 3, "prefetch": 4}
    assert not result.defaults_are_best and 2 < result.gain < 6
    assert all(loader.closed for loader in built)  # each trial's workers stopped before the next
    # the winner and the defaults were measured twice (in reverse order the second time)
    assert [t.settings for t in result.trials[-2:]] == [result.best, defaults]
    assert "the defaults" in result.summary() and "x the defaults" in result.summary()
    assert result.loader_call("train.lmdb").startswith("fastload.Loader('train.lmdb', num_threads=3")
    assert json.loads(json.dumps(result.to_json()))["best"] == result.best


def test_says_so_when_the_defaults_are_already_best():
    make_loader, _ = _simulate(lambda s: 2e-4)  # every setting equally fast
    result = tune.tune(FakeStore(), threads=[1, 2], batch_sizes=[32, 64], prefetch=[1, 2],
                       make_loader=make_loader, tolerance=0.5, **FAST)
    assert result.defaults_are_best and result.best == result.default
    assert "the defaults are kept" in str(result)


def test_the_report_shows_each_setting_once_with_the_rate_the_verdict_uses():
    make_loader, _ = _simulate(lambda s: 4e-4 / s["num_threads"])  # more threads: faster
    result = tune.tune(FakeStore(), threads=[1, 8], batch_sizes=[64], prefetch=[2],
                       make_loader=make_loader, tolerance=0.05, **FAST)
    assert not result.defaults_are_best and any(t.again for t in result.trials)
    rows = result.table().splitlines()[1:]
    settings = [row.split("  ")[0] for row in rows]
    assert len(settings) == len(set(settings)) == len({tuple(t.settings.items()) for t in result.trials})
    best_row = next(row for row in rows if row.endswith("<- best"))
    default_row = next(row for row in rows if "<- defaults" in row)
    assert f"{result.best_images_per_s:.0f}" == best_row.split()[-5]
    assert f"{result.default_images_per_s:.0f}" == default_row.split()[-5]


def test_a_failing_setting_loses_instead_of_stopping_the_search():
    def make_loader(**settings):
        if settings["num_threads"] == 7:
            raise RuntimeError("worker killed (out of memory)")
        return SimulatedLoader(5e-5, settings["batch_size"])

    result = tune.tune(FakeStore(), threads=[7], batch_sizes=[64], prefetch=[2],
                       make_loader=make_loader, tolerance=0.5, **FAST)
    failed = [t for t in result.trials if t.error]
    assert len(failed) == 1 and "out of memory" in str(failed[0])
    assert result.defaults_are_best


def test_stops_at_once_when_the_defaults_fail():
    def make_loader(**settings):
        raise RuntimeError("no such device")

    with pytest.raises(fastload.FastloadError, match="default settings .*no such device"):
        tune.tune(FakeStore(), make_loader=make_loader, **FAST)


def _loader_keywords() -> set[str]:
    import inspect

    return set(inspect.signature(fastload.Loader).parameters)


def test_on_a_gpu_the_decoder_split_is_searched_and_printed_as_a_loader_keyword():
    # device="cuda" with a simulated loader: the search logic runs without a GPU.
    make_loader, built = _simulate(lambda s: 4e-4 / (1 + 2 * (s["hw_decoder_load"] == 0.9)))
    result = tune.tune(FakeStore(), threads=[2], batch_sizes=[64], prefetch=[2],
                       hw_decoder_loads=[0.0, 0.9], make_loader=make_loader, device="cuda", **FAST)
    assert result.default["hw_decoder_load"] == tune.DALI_HW_DECODER_LOAD
    assert result.best["hw_decoder_load"] == 0.9 and result.gain > 1.5 and not result.notes
    assert {t.settings["hw_decoder_load"] for t in result.trials} == {0.0, 0.65, 0.9}
    assert set(result.best) <= _loader_keywords()  # the Loader accepts every printed setting
    assert "hw_decoder_load=0.9" in result.loader_call() and "hw_decoder_load=0.9" in result.summary()


@pytest.mark.parametrize("where", [{"device": "cpu"}, {"device": "cuda", "backend": "torch"}])
def test_gpu_only_settings_are_skipped_with_a_note_where_they_cannot_matter(where):
    make_loader, _ = _simulate(lambda s: 1e-4)
    result = tune.tune(FakeStore(), threads=[2], batch_sizes=[64], prefetch=[2],
                       hw_decoder_loads=[0.0, 1.0], make_loader=make_loader, tolerance=0.5,
                       **where, **FAST)
    assert all("hw_decoder_load" not in t.settings for t in result.trials)
    assert result.notes[0].startswith("hw_decoder_load not searched")
    assert set(result.best) <= _loader_keywords() and result.notes[0] in str(result)


@pytest.mark.skipif(importlib.util.find_spec("nvidia.dali") is None, reason="needs DALI")
def test_on_the_cpu_with_dali_the_host_stage_in_processes_is_searched():
    make_loader, _ = _simulate(lambda s: 4e-4 / (1 + (s["host_workers"] == 2)))
    result = tune.tune(FakeStore(), threads=[2], batch_sizes=[64], prefetch=[2], make_loader=make_loader,
                       device="cpu", **FAST)
    assert result.default["host_workers"] == 0 and result.best["host_workers"] == 2 and result.gain > 1.5
    assert {t.settings["host_workers"] for t in result.trials} == {0, 2}
    assert "host_workers=2" in result.loader_call() and set(result.best) <= _loader_keywords()


@pytest.mark.parametrize("where", [{"device": "cuda"}, {"device": "cpu", "backend": "torch"}])
def test_host_workers_are_skipped_with_a_note_where_the_ops_run_elsewhere(where):
    make_loader, _ = _simulate(lambda s: 1e-4)
    result = tune.tune(FakeStore(), threads=[2], batch_sizes=[64], prefetch=[2], hw_decoder_loads=[0.5],
                       host_workers=[2], make_loader=make_loader, tolerance=0.5, **where, **FAST)
    assert all("host_workers" not in t.settings for t in result.trials)
    assert any(note.startswith("host_workers not searched") for note in result.notes)


def test_decoder_split_candidates_must_lie_between_0_and_1():
    make_loader, _ = _simulate(lambda s: 1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tune.tune(FakeStore(), hw_decoder_loads=[1.5], make_loader=make_loader, device="cuda", **FAST)


def test_refuses_a_store_smaller_than_one_default_batch(small_lmdb):
    with pytest.raises(ValueError, match="fewer than one default batch"):
        tune.tune(small_lmdb, make_loader=lambda **s: SimulatedLoader(0, 1))


@pytest.fixture(scope="module")
def store_of_72(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("tune") / "data"
    make_sample_folder(root, SampleSpec(num_classes=3, per_class=24, short_side=(40, 56)), workers=1)
    out = str(root) + ".lmdb"
    fastload.pack(root, out, options=fastload.PackOptions(workers=1, progress=False))
    return out


@pytest.mark.skipif(not hasattr(fastload, "Loader"), reason="fastload.Loader not available yet")
def test_cli_tunes_the_real_loader_and_saves_the_settings(store_of_72, tmp_path, capsys):
    saved = tmp_path / "tuned.json"
    assert cli.main(["tune", store_of_72, "--backend", "torch", "--device", "cpu",
                     "--image-size", "32", "--threads", "1", "--batch-sizes", "64",
                     "--prefetch", "2", "--rounds", "2", "--save", str(saved)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(saved.read_text())
    assert set(result["best"]) == {"num_threads", "batch_size", "prefetch"}
    assert result["default_images_per_s"] > 0 and all(not t["error"] for t in result["trials"])
    assert "fastload.Loader(" in printed and "defaults num_threads=" in printed


class TensorLoader(SimulatedLoader):
    """The simulated loader with real (tiny) image tensors, for a model in the loop."""

    def __iter__(self):
        import torch

        for _, labels in super().__iter__():
            yield torch.zeros(self.batch_size, 3, 16, 16), torch.zeros(len(labels), dtype=torch.int64)


def test_with_a_model_in_the_loop_every_batch_is_trained_on():
    pytest.importorskip("torchvision")
    steps, defaults = [], tune.default_settings()
    make_loader, _ = _simulate(lambda s: 0.0)
    # Only the defaults as candidates: one trial, enough to see the model in the loop.
    result = tune.tune(FakeStore(), threads=[defaults["num_threads"]],
                       batch_sizes=[defaults["batch_size"]], prefetch=[defaults["prefetch"]], host_workers=[],
                       model="shufflenet_v2_x0_5", device="cpu", progress=steps.append,
                       make_loader=lambda **s: TensorLoader(0, s["batch_size"]), **FAST)
    assert result.model == "shufflenet_v2_x0_5" and result.default_images_per_s > 0 and len(steps) == 1
    assert "training images/s (shufflenet_v2_x0_5 in the loop)" in result.summary()
    assert json.loads(json.dumps(result.to_json()))["model"] == "shufflenet_v2_x0_5"


def test_cli_names_an_unknown_model(store_of_72, capsys):
    pytest.importorskip("torchvision")
    assert cli.main(["tune", store_of_72, "--model", "resnet_nope", "--device", "cpu"]) == 2
    assert "no model 'resnet_nope'" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not hasattr(fastload, "Loader"), reason="fastload.Loader not available yet")
def test_cli_on_a_gpu_prints_a_winning_decoder_split(store_of_72, tmp_path, capsys):
    saved = tmp_path / "tuned.json"
    assert cli.main(["tune", store_of_72, "--device", "cuda", "--image-size", "32",
                     "--threads", "2", "--batch-sizes", "64", "--prefetch", "2",
                     "--hw-decoder-loads", "0,1", "--rounds", "1", "--images-per-round", "64",
                     "--save", str(saved)]) == 0
    result = json.loads(saved.read_text())
    assert "hw_decoder_load" in result["best"] and not result["notes"]
    assert f"hw_decoder_load={result['best']['hw_decoder_load']}" in capsys.readouterr().out
