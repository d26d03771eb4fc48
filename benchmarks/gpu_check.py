"""Check a CUDA machine end to end in one command: the tests, the GPU loaders against the nvJPEG
ceiling of the same files, custom ops, training in the loop, the tuner, and the same loaders with
CUDA hidden.

    python -m benchmarks.gpu_check --out gpu-check             # ~8 minutes on an H200 + 16 cores
    python -m benchmarks.gpu_check --smoke --out /tmp/check    # every step at toy size (CI: CPU)
    python -m benchmarks.gpu_check --steps data,loaders        # some steps (data is always made)

Steps, in this order (the measurements first, so a run cut short keeps the figures; the tests
split in two so no test runs twice):

    env          the machine, the driver, the versions, whether py-spy can sample
    gpu-tests    pytest -m gpu
    data         photo-like JPEGs generated on every core, packed as LMDB, HDF5 and raw LMDB
    ceiling      DALI's mixed decoder alone on the same files, per batch size and hw_decoder_load
    loaders      DALI readers.file and fastload LMDB, HDF5, raw on the GPU at each batch size:
                 img/s, first batch, host us/img, GIL us/img (py-spy), GPU memory peak
    restart      first batch after a broken-off pass
    custom-ops   a cheap @op, the README's add_noise, a @batch_op, mixup/cutmix
    training     ResNet-18 and ResNet-50 (bf16, channels_last) fed by each loader vs synthetic data
    tune         ``fastload tune --model resnet50``: the hw_decoder_load and prefetch it picks
    cpu-only     the loaders again with CUDA hidden, every core: readers.file vs fastload, GIL
    op-lists     CUDA hidden, every core: the op lists against torchvision v2 with the same ops
    suite        the rest of the test suite (pytest -m "not gpu"), in the time that is left

Each step runs in subprocesses under its own time limit and the whole under ``--budget``; the
report is rewritten after every row, so a run cut short still says what it measured. In --out:
gpu_check.md (tables, and every target met or not), gpu_check.json (every figure) and
gpu_check.log (what each step printed). Under --smoke on a machine without CUDA every step runs
its CPU twin (the GPU loaders' CPU versions, training on the CPU at 32 px), so the command is
exercised in CI.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402

from benchmarks import check_report  # noqa: E402
from benchmarks.ceilings import GPU_SPLITS, gpu_decode_ceiling_isolated  # noqa: E402
from benchmarks.config import BenchConfig, BenchData  # noqa: E402
from benchmarks.custom_ops import MIX  # noqa: E402
from benchmarks.data import prepare_data_isolated, sample_spec  # noqa: E402
from benchmarks.gil import py_spy  # noqa: E402
from benchmarks.harness import usable_cores  # noqa: E402
from benchmarks.loaders import LOADERS, SYNTHETIC  # noqa: E402
from benchmarks.report import machine_info, summarize_training  # noqa: E402
from benchmarks.suite import REPO_ROOT, run_config  # noqa: E402

__all__ = ["FULL", "SMOKE", "STEPS", "Plan", "main"]

STEPS = ("env", "gpu-tests", "data", "ceiling", "loaders", "restart", "custom-ops", "training",
         "tune", "cpu-only", "op-lists", "suite")
EVERY_THREAD = 100.0  # a host-stage share margin that gives every batch all the host threads
CUSTOM_OPS = ("train", "+ 255 - x @op at the end", "+ 255 - x @batch_op", "+ add_noise @op",
              "+ add_noise @op(vectorized=True)", MIX)


@dataclass(frozen=True)
class Plan:
    """How big each step is, and how long it may take.

    Attributes:
        classes, per_class: the generated photo-like set.
        batch_sizes: the loader grid's batch sizes, the most important first (a step cut
            short has measured those).
        main_batch: the batch size of the GIL sample, restart, custom ops, training, tuner and
            CPU-only rows.
        rounds, images_per_round, warmup_batches: each loader row's timing.
        gil_seconds: py-spy's window per sampled row.
        train_models, train_image_size, train_images_per_round: the training step.
        custom_rounds, custom_batches: the custom-op interleaved rounds.
        op_list_rounds, op_lists: the op-lists step's rounds and lists (benchmarks/op_lists.py).
        limits: seconds each step may take (the suite gets what is left of the budget).
        config_limit: seconds one measured configuration may take.
        suite: pytest arguments of the suite step (after ``-m "not gpu"``).
        gpu_tests: pytest arguments of the gpu-tests step (after ``-m gpu``).
        workers: pytest-xdist workers for the test steps (0: none).
    """

    classes: int
    per_class: int
    batch_sizes: tuple[int, ...]
    main_batch: int
    rounds: int
    images_per_round: int
    warmup_batches: int
    gil_seconds: float
    ceiling_seconds: float
    train_models: tuple[str, ...]
    train_image_size: int
    train_images_per_round: int
    custom_rounds: int
    custom_batches: int
    tune_images_per_round: int
    op_list_rounds: int = 3
    op_lists: tuple[str, ...] = ("preset", "colorjitter", "radiology", "blur")
    limits: dict[str, float] = field(default_factory=dict)
    config_limit: float = 60.0
    suite: tuple[str, ...] = ()
    gpu_tests: tuple[str, ...] = ()
    workers: int = 0

    @property
    def images(self) -> int:
        return self.classes * self.per_class


FULL = Plan(classes=100, per_class=200, batch_sizes=(256, 128, 512), main_batch=256, rounds=3,
            images_per_round=5120, warmup_batches=5, gil_seconds=2.0, ceiling_seconds=1.0,
            train_models=("resnet18", "resnet50"), train_image_size=224, train_images_per_round=2560,
            custom_rounds=3, custom_batches=6, tune_images_per_round=1280,
            # H200 + 16 cores, 2026-12-04: env 1 s, gpu-tests 52 (8 workers), data 59, ceiling 32,
            # 12 loader rows 102, restart 10, custom-ops 29, training 97 (8 rows), tune 44,
            # cpu-only 51 (four rows; seven since 2026-12-05: ~95); the suite then had no time left
            # (serially it needs ~14 minutes).
            limits={"env": 15, "gpu-tests": 50, "data": 75, "ceiling": 40, "loaders": 90,
                    "restart": 20, "custom-ops": 40, "training": 80, "tune": 50, "cpu-only": 100,
                    "op-lists": 75},
            config_limit=40.0,
            # This command at smoke size is in the suite: here it would only repeat the run.
            suite=("--ignore", "tests/test_gpu_check.py"),
            workers=usable_cores())
SMOKE = Plan(classes=4, per_class=16, batch_sizes=(16,), main_batch=16, rounds=1,
             images_per_round=32, warmup_batches=1, gil_seconds=1.0, ceiling_seconds=0.2,
             train_models=("resnet18",), train_image_size=32, train_images_per_round=32,
             custom_rounds=1, custom_batches=1, tune_images_per_round=32, op_list_rounds=1, op_lists=("radiology",),
             limits={"env": 30, "gpu-tests": 60, "data": 120, "ceiling": 60, "loaders": 120,
                     "restart": 60, "custom-ops": 90, "training": 120, "tune": 120, "cpu-only": 120,
                     "op-lists": 120},
             # one quick file each: the smoke run is itself a test, which must not run the suite
             suite=("tests/test_op_config.py",), gpu_tests=("tests/test_op_config.py",))


class Check:
    """One run: where it writes, its clock, and the report it rewrites after every row."""

    def __init__(self, out: str, plan: Plan, budget_s: float, device: str, threads: int,
                 smoke: bool) -> None:
        self.out, self.plan, self.device, self.threads, self.smoke = out, plan, device, threads, smoke
        self.started = time.perf_counter()
        self.deadline = self.started + budget_s
        self.step_deadline = self.deadline
        self.data: BenchData | None = None
        os.makedirs(out, exist_ok=True)
        self.log_path = os.path.join(out, "gpu_check.log")
        open(self.log_path, "w").close()
        self.report: dict[str, Any] = {
            "meta": {**machine_info(usable_cores()), "device": device, "threads": threads,
                     "smoke": smoke, "budget_s": budget_s, "plan": asdict(plan)},
            "steps": {}}

    # --- time -------------------------------------------------------------------------

    def left(self) -> float:
        """Seconds left to the current step (never past the whole run's deadline)."""
        return min(self.step_deadline, self.deadline) - time.perf_counter()

    # --- output -----------------------------------------------------------------------

    def say(self, line: str) -> None:
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def save(self) -> None:
        """Rewrite gpu_check.json and gpu_check.md (atomically: a reader never sees half)."""
        self.report["meta"]["wall_s"] = time.perf_counter() - self.started
        self.report["targets"] = check_report.targets(self.report)
        for name, text in (("gpu_check.json", json.dumps(self.report, indent=1, default=str)),
                           ("gpu_check.md", check_report.markdown(self.report))):
            tmp = os.path.join(self.out, f".{name}.tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(self.out, name))

    def put(self, key: str, value: Any) -> None:
        self.report[key] = value
        self.save()

    # --- subprocesses -----------------------------------------------------------------

    def command(self, cmd: list[str]) -> tuple[int | None, str]:
        """Run ``cmd`` from the repository root until the step's time runs out, its output
        appended to the log as it comes; (exit code or None when it was stopped, its output)."""
        self.say(f"$ {' '.join(cmd)}")
        with open(self.log_path, "a") as log:
            start = log.tell()
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                code: int | None = proc.wait(timeout=max(1.0, self.left()))
            except subprocess.TimeoutExpired:
                _kill_tree(proc)
                code = None
        with open(self.log_path) as f:
            f.seek(start)
            output = f.read()
        if code is None:
            self.say("(stopped: the step's time ran out)")
        return code, output

    def config_timeout(self) -> float:
        """One configuration's limit: a hung one must not take its whole step."""
        return max(1.0, min(self.plan.config_limit, self.left()))


def _kill_tree(proc: subprocess.Popen) -> None:
    """End a command and everything it started, its own sessions included (the benchmark
    harness puts each configuration in a session of its own)."""
    try:
        family = [*psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in family:
        try:
            child.kill()
        except psutil.Error:
            pass
    proc.wait()


# --- steps ----------------------------------------------------------------------------------


def step_env(check: Check) -> str:
    smi = shutil.which("nvidia-smi")
    gpu = None
    if smi:
        code, out = check.command([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                   "--format=csv,noheader"])
        gpu = out.strip().splitlines()[-1] if code == 0 and out.strip() else None
    dali = _version_of("nvidia.dali")
    check.report["meta"].update(gpu=gpu, dali=dali, py_spy=py_spy(), xdist=_has("xdist"))
    return f"{gpu or 'no GPU'}; DALI {dali or 'not installed'}; py-spy {'yes' if py_spy() else 'no'}"


def _version_of(module: str) -> str | None:
    if not _has(module.split(".")[0]) or importlib.util.find_spec(module) is None:
        return None
    code = f"import {module} as m; print(m.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or None


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _pytest(check: Check, key: str, marker: str, extra: tuple[str, ...]) -> str:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-m", marker, *extra]
    if check.plan.workers > 1 and _has("xdist"):
        cmd += ["-p", "xdist", "-n", str(check.plan.workers)]
    code, output = check.command(cmd)
    result = check_report.pytest_summary(output)
    result.update(exit_code=code, stopped=code is None, command=" ".join(["python", *cmd[1:]]))
    check.report.setdefault("tests", {})[key] = result
    check.save()
    if code not in (0, 5):
        raise StepFailed(result.get("line") or f"pytest exit code {code}")
    return result.get("line", "")


class StepFailed(Exception):
    """A step that ran and found something wrong (tests failing): reported, the run goes on."""


def step_gpu_tests(check: Check) -> str:
    if check.device != "cuda":
        raise StepSkipped("no CUDA device: the GPU-marked tests skip themselves")
    return _pytest(check, "gpu", "gpu", check.plan.gpu_tests)


def step_suite(check: Check) -> str:
    return _pytest(check, "suite", "not gpu", check.plan.suite)


class StepSkipped(Exception):
    """A step that does not apply on this machine."""


def step_data(check: Check) -> str:
    """The photos and the encoded stores first, then the raw store (~0.7 MB a photo: the
    slowest to pack), so a raw pack that runs out of time leaves the other rows measurable."""
    plan = check.plan
    spec = sample_spec(plan.classes, plan.per_class)
    work = os.path.abspath(check.report["meta"]["work"])
    for formats in (("lmdb", "hdf5"), ("lmdb", "hdf5", "lmdb-raw")):  # the second reuses the first's
        try:
            check.data = prepare_data_isolated(work, spec=spec, formats=formats, timeout_s=max(1.0, check.left()))
        except RuntimeError:
            if check.data is None:
                raise
            check.put("data", check.data.to_json())
            raise StepFailed("the raw store was not packed in time: its rows are skipped") from None
    check.put("data", check.data.to_json())
    packed = ", ".join(f"{fmt} {s['images_per_s']:.0f} img/s" for fmt, s in check.data.pack.items())
    return f"{check.data.description}; packed {packed}"


def step_ceiling(check: Check) -> str:
    if check.device != "cuda":
        raise StepSkipped("no CUDA device: the nvJPEG ceiling needs one")
    result = gpu_decode_ceiling_isolated(
        check.data.folder, batch_sizes=_fitting(check, check.plan.batch_sizes), threads=check.threads,
        hw_decoder_loads=GPU_SPLITS, min_seconds=check.plan.ceiling_seconds,
        timeout_s=check.config_timeout())
    check.put("ceiling", result)
    if "error" in result:
        raise StepFailed(result["error"])
    return ", ".join(f"batch {b}: {v['ceiling_images_per_s']:.0f} img/s (hw_decoder_load "
                     f"{v['best_hw_decoder_load']:g})" for b, v in result["by_batch_size"].items())


def _fitting(check: Check, sizes: tuple[int, ...]) -> list[int]:
    return [b for b in sizes if b <= check.data.count]


def _names(check: Check, stores: tuple[str, ...], device: str) -> list[str]:
    suffix = "-gpu" if device == "cuda" else ""
    return ["dali-file" + suffix, *(f"fastload-dali-{s}{suffix}" for s in stores)]


def _rows(check: Check, rows: list[dict], configs: list[BenchConfig],
          env: dict[str, str] | None = None) -> list[dict]:
    """Measure each configuration in its own process into ``rows`` (a list the report holds),
    the report rewritten after each row."""
    for config in configs:
        reason = LOADERS[config.loader].unavailable(check.data)
        if reason or check.left() < 3:
            rows.append({"loader": config.loader, "batch_size": config.batch_size, "threads": config.threads,
                         "status": "skipped", "note": reason or "the step's time ran out"})
            continue
        row = run_config(config, check.data, timeout_s=check.config_timeout(), env=env)
        rows.append(row)
        check.say(check_report.row_line(row))
        check.save()
    return rows


def _config(check: Check, loader: str, batch_size: int, gil: bool, **extra: Any) -> BenchConfig:
    plan = check.plan
    return BenchConfig(loader=loader, threads=check.threads, batch_size=batch_size,
                       image_size=224, warmup_batches=plan.warmup_batches,
                       batches_per_round=max(2, math.ceil(plan.images_per_round / batch_size)),
                       rounds=plan.rounds, gil_seconds=plan.gil_seconds if gil else 0.0, **extra)


def step_loaders(check: Check) -> str:
    """Every store kind at the main batch size (GIL sampled there); readers.file and the LMDB
    store at the others too (each row is a fresh process: ~5 s of start-up on its own)."""
    names = _names(check, ("lmdb", "hdf5", "lmdb-raw"), check.device)
    main = check.plan.main_batch
    configs = [_config(check, name, b, gil=b == main)
               for b in _fitting(check, check.plan.batch_sizes) for name in (names if b == main else names[:2])]
    rows = _rows(check, check.report.setdefault("loaders", []), configs)
    return f"{sum(r.get('status') == 'ok' for r in rows)}/{len(rows)} rows measured"


def step_cpu_only(check: Check) -> str:
    """The loaders with CUDA hidden; then the LMDB store with its host stage on every thread and
    DALI's threads at normal priority (``host_margin``), against the measured share of threads and
    DALI's threads in the background (``fastload.backends.dali.share``); then the raw store on the
    torch backend, against the DALI backend's row (DALI decodes nothing there: its host stage runs
    the ops on threads of the Loader's process, the torch backend in worker processes, which
    ``backend="auto"`` takes on the CPU for such stores: 2 cores, RESULTS 25; here, on every core);
    then the LMDB store with its host stage in processes (``host_workers``), against its threads
    (2 cores: GIL halved at about the same rate, RESULTS 26; which should be the default here)."""
    names = _names(check, ("lmdb", "hdf5", "lmdb-raw"), "cpu")
    configs = [_config(check, name, check.plan.main_batch, gil=True) for name in names]
    configs.append(_config(check, names[1], check.plan.main_batch, gil=True, host_margin=EVERY_THREAD))
    configs.append(_config(check, "fastload-torch-lmdb-raw", check.plan.main_batch, gil=True))
    configs.append(_config(check, "fastload-dali-lmdb-procs", check.plan.main_batch, gil=True))
    rows = _rows(check, check.report.setdefault("cpu_only", []), configs,
                 env={"CUDA_VISIBLE_DEVICES": ""})
    return f"{sum(r.get('status') == 'ok' for r in rows)}/{len(rows)} rows measured, CUDA hidden"


def _json_command(check: Check, key: str, cmd: list[str]) -> dict[str, Any]:
    """Run a benchmark script that writes ``--json PATH``; its figures go under ``key``."""
    path = os.path.join(check.report["meta"]["work"], f"{key}.json")
    if os.path.exists(path):
        os.remove(path)
    code, output = check.command([*cmd, "--json", path])
    if code != 0 or not os.path.exists(path):
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise StepFailed(f"exit code {code}: {tail}"[:500])
    with open(path) as f:
        result = json.load(f)
    check.put(key, result)
    return result


def step_restart(check: Check) -> str:
    r = _json_command(check, "restart", [
        sys.executable, "benchmarks/restart.py", check.data.stores["lmdb"], "--device", check.device,
        "--threads", str(check.threads), "--batch-size", str(check.plan.main_batch)])
    return f"first batch {r['first_batch_s']:.2f} s, after a broken-off pass {r['restart_s']:.3f} s"


def step_custom_ops(check: Check) -> str:
    plan = check.plan
    r = _json_command(check, "custom_ops", [
        sys.executable, "benchmarks/custom_ops.py", "--work", check.report["meta"]["work"],
        "--data", check.data.folder, "--device", check.device, "--threads", str(check.threads),
        "--batch-size", str(plan.main_batch), "--image-size", "224" if not check.smoke else "32",
        "--rounds", str(plan.custom_rounds), "--batches", str(plan.custom_batches),
        "--only", ",".join(CUSTOM_OPS[1:])])
    return ", ".join(f"{n}: {v['overhead_pct']:.0f}%" for n, v in r["results"].items() if n != "train")


def step_training(check: Check) -> str:
    plan = check.plan
    dali_file, lmdb = _names(check, ("lmdb",), check.device)
    # The synthetic reference once, first: on a machine of its own it drifts by <1% over the
    # step (H200: 13,123 vs 13,089 img/s, first vs last), and every row costs ~12 s of start-up.
    loaders = (SYNTHETIC, lmdb, dali_file)
    training = check.report.setdefault("training", {})
    lines = []
    for model in plan.train_models:
        configs = [replace(_config(check, name, plan.main_batch, gil=False),
                           image_size=plan.train_image_size, train_model=model, train_device=check.device,
                           batches_per_round=max(2, math.ceil(plan.train_images_per_round / plan.main_batch)))
                   for name in loaders]
        training[model] = {"rows": [], "summary": {}}
        rows = _rows(check, training[model]["rows"], configs)
        summary = summarize_training(rows, None, model)
        training[model]["summary"] = summary
        check.save()
        best = summary.get("fastload_best") or {}
        lines.append(f"{model}: fastload {check_report.percent(best.get('busy_fraction'))} of synthetic")
    return "; ".join(lines)


def step_tune(check: Check) -> str:
    plan = check.plan
    model = plan.train_models[-1]
    path = os.path.join(check.report["meta"]["work"], "tune.json")
    code, output = check.command([
        sys.executable, "-c", "import sys; from fastload.cli import main; sys.exit(main())", "tune",
        check.data.stores["lmdb"], "--model", model, "--backend", "dali", "--device", check.device,
        "--image-size", str(plan.train_image_size), "--threads", str(check.threads),
        "--batch-sizes", str(plan.main_batch), "--prefetch", "2,4", "--hw-decoder-loads",
        ",".join(f"{x:g}" for x in GPU_SPLITS), "--rounds", "2",
        "--images-per-round", str(plan.tune_images_per_round), "--save", path])
    if code != 0 or not os.path.exists(path):
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise StepFailed(f"exit code {code}: {tail}"[:500])
    with open(path) as f:
        result = json.load(f)
    check.put("tune", result)
    return f"best {result.get('best')} ({model} in the loop)"


def step_op_lists(check: Check) -> str:
    """The op lists against torchvision with the same ops, CUDA hidden, on every core."""
    plan = check.plan
    result = _json_command(check, "op_lists", [
        "env", "CUDA_VISIBLE_DEVICES=", sys.executable, "benchmarks/op_lists.py", "--work", check.report["meta"]["work"],
        "--data", check.data.folder, "--threads", str(check.threads), "--batch-size", str(plan.main_batch),
        "--image-size", "224" if not check.smoke else "32", "--rounds", str(plan.op_list_rounds), "--batches", "4",
        "--settle", "0.5", "--lists", ",".join(plan.op_lists)])
    return ", ".join(f"{n}: {by['fastload dali']['ratio']:.2f}x" for n, by in result["results"].items()) + " torchvision"


RUNNERS: dict[str, Callable[[Check], str]] = {
    "env": step_env, "gpu-tests": step_gpu_tests, "data": step_data, "ceiling": step_ceiling,
    "loaders": step_loaders, "restart": step_restart, "custom-ops": step_custom_ops,
    "training": step_training, "tune": step_tune, "cpu-only": step_cpu_only, "op-lists": step_op_lists,
    "suite": step_suite}


def run_step(check: Check, name: str) -> None:
    """Run one step under its time limit; its status, seconds and one-line note go in the report."""
    limit = check.plan.limits.get(name, math.inf)
    start = time.perf_counter()
    check.step_deadline = start + limit
    if check.left() < 5:
        status, note = "skipped", "no time left in the budget"
    elif check.data is None and name not in ("env", "gpu-tests", "data", "suite"):
        status, note = "skipped", "no data (the data step did not finish)"
    else:
        check.say(f"== {name} (up to {check.left():.0f} s)")
        try:
            status, note = "ok", RUNNERS[name](check)
        except StepSkipped as exc:
            status, note = "skipped", str(exc)
        except StepFailed as exc:
            status, note = "failed", str(exc)
        except Exception as exc:  # a broken step is reported; the next steps still run
            status, note = "error", f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    if status == "ok" and seconds >= limit:
        status = "timed out"
    check.report["steps"][name] = {"status": status, "seconds": round(seconds, 1), "limit_s": limit,
                                   "note": note}
    check.say(f"-- {name}: {status} in {seconds:.0f} s: {note}")
    check.save()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu-check", help="where the report goes (default ./gpu-check)")
    p.add_argument("--work", help="generated data and stores (default OUT/../gpu-check-data; reused)")
    p.add_argument("--smoke", action="store_true", help="every step at toy size; runs without CUDA")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run (default 480)")
    p.add_argument("--threads", type=int, help="loader threads (default: every usable core)")
    p.add_argument("--steps", help=f"comma-separated subset of: {', '.join(STEPS)}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        raise SystemExit("gpu_check: no CUDA device here. This command checks a GPU machine; "
                         "--smoke runs its steps at toy size on the CPU.")
    steps = [s.strip() for s in args.steps.split(",")] if args.steps else list(STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise SystemExit(f"gpu_check: unknown steps {unknown}; known: {', '.join(STEPS)}")
    if any(s not in ("env", "gpu-tests", "suite") for s in steps):
        steps.append("data")  # the measuring steps need it (made once, reused after)
    steps = [s for s in STEPS if s in steps]
    plan = SMOKE if args.smoke else FULL
    out = os.path.abspath(args.out)
    check = Check(out, plan, args.budget, "cuda" if cuda else "cpu", args.threads or usable_cores(),
                  args.smoke)
    check.report["meta"]["work"] = os.path.abspath(args.work or os.path.join(os.path.dirname(out),
                                                                               "gpu-check-data"))
    check.save()
    for name in steps:
        run_step(check, name)
    check.say(f"wrote {os.path.join(out, 'gpu_check.md')} and gpu_check.json "
              f"({time.perf_counter() - check.started:.0f} s)")
    failed = [n for n, s in check.report["steps"].items() if s["status"] in ("failed", "error", "timed out")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
