"""Compare image loaders on the same training work: the fastload benchmark suite.

    python benchmarks/run.py                  # generate an ImageNet-like sample set, pack, compare
    python benchmarks/run.py --quick          # a smoke run: under 2 minutes on 2 cores
    python benchmarks/run.py --data ~/datasets/train --threads 1,2,4,8 --batch-sizes 32,64,128,256
    python benchmarks/run.py --list           # the loaders and whether each can run here
    python benchmarks/run.py --train resnet50 # also: each loader feeding a training step
    python benchmarks/run.py --quick --train resnet18   # the same, small: a few minutes on 2 cores

Every configuration runs in a fresh subprocess. Results go to ./results/ (results.json,
results.csv, throughput_by_loader.png, and throughput_vs_threads.png / throughput_vs_batch_size.png
where those axes have two values or more; with --train also
training.csv and training_vs_synthetic.png).

--train MODEL (any torchvision model name) measures every loader again, each batch feeding a
training step (forward, backward, SGD; bf16 autocast + channels_last on a GPU, float32 on the
CPU), plus the same model on synthetic tensors already on the device; the report gives each
loader's training img/s and its fraction of the synthetic speed (how busy it keeps the model).
The synthetic reference is measured first and last (the faster counts), so a machine that
warms up or gets busier during the run does not flatter the loaders in between. Under --quick
the training pass uses 32 px images and batch 32 (a CPU trains 224 px far too slowly for a
smoke run); give --train-image-size/--train-batch-sizes to change that.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # noqa: E402
from benchmarks.ceilings import GPU_SPLITS, gpu_decode_ceiling_isolated  # noqa: E402
from benchmarks.data import decode_ceiling, prepare_data, sample_spec  # noqa: E402
from benchmarks.harness import usable_cores  # noqa: E402
from benchmarks.loaders import LOADERS, SYNTHETIC, default_loaders  # noqa: E402
from benchmarks.suite import Grid, run_suite  # noqa: E402

# --quick: small enough for CI on 2 cores (< 2 minutes including generation and packing;
# a few more with --train).
QUICK = {"classes": 4, "per_class": 50, "batch_sizes": "64", "rounds": 3,
         "images_per_round": 256, "warmup_batches": 2, "timeout": 60,
         "train_image_size": 32, "train_batch_sizes": "32", "train_images_per_round": 128}


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) < 0 or max(values) > 1:
        raise argparse.ArgumentTypeError(f"expected numbers in [0, 1], got {text!r}")
    return values


def _model(name: str) -> str:
    try:
        from torchvision import models
    except ImportError:
        raise argparse.ArgumentTypeError("--train needs torchvision (pip install -e '.[bench]')") from None
    if name not in models.list_models():
        raise argparse.ArgumentTypeError(f"torchvision has no model {name!r} (e.g. resnet18, resnet50)")
    return name


def _default_threads() -> str:
    cores = usable_cores()
    powers = [t for t in (1, 2, 4, 8, 16, 32, 64) if t < cores]
    return ",".join(map(str, [*powers, cores]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="an ImageFolder tree to use instead of the generated sample set")
    p.add_argument("--work", default="bench-data", help="where generated images and stores go")
    p.add_argument("--out", default="results", help="results folder (JSON, CSV, PNG)")
    p.add_argument("--loaders", help=f"comma-separated subset of: {', '.join(LOADERS)}")
    p.add_argument("--threads", type=_ints, help="thread/worker counts (default: 1,2,4.. up to the cores)")
    p.add_argument("--batch-sizes", type=_ints, help="batch sizes (default: 32,64,128)")
    p.add_argument("--image-size", type=int, default=224, help="random-resized-crop output side")
    p.add_argument("--classes", type=int, help="generated classes (default 10)")
    p.add_argument("--per-class", type=int, help="generated images per class (default 200)")
    p.add_argument("--short-side", type=_ints, default=(300, 500),
                   help="generated images' short side range MIN,MAX (default 300,500: ImageNet-like)")
    p.add_argument("--rounds", type=int, help="timed rounds per configuration (default 5)")
    p.add_argument("--images-per-round", type=int, help="images per timed round (default 1280)")
    p.add_argument("--warmup-batches", type=int, help="untimed batches after the first (default 5)")
    p.add_argument("--gil-seconds", type=float, default=0.0,
                   help="after each configuration's rounds, sample the GIL with py-spy for this long: the GIL "
                        "us/img column, every thread of the loader's process (needs py-spy; 0: off)")
    p.add_argument("--timeout", type=float, help="seconds before a configuration is killed (default 600)")
    p.add_argument("--quick", action="store_true", help="small data, one configuration per loader")
    p.add_argument("--train", type=_model, metavar="MODEL",
                   help="also measure each loader feeding a training step of this torchvision "
                        "model (resnet18, resnet50, ...) against the model on synthetic data")
    p.add_argument("--train-only", action="store_true", help="with --train: skip the loader-alone rows")
    p.add_argument("--train-device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the model trains (default: the GPU when there is one)")
    p.add_argument("--train-batch-sizes", type=_ints, help="training batch sizes (default: --batch-sizes; 32 under --quick)")
    p.add_argument("--train-image-size", type=int, help="training image side (default: --image-size; 32 under --quick)")
    p.add_argument("--train-images-per-round", type=int,
                   help="images per timed training round (default: --images-per-round; 128 under --quick)")
    p.add_argument("--gpu-splits", type=_floats, default=GPU_SPLITS,
                   help="hw_decoder_load splits of the GPU decode ceiling (default 0,0.65,1)")
    p.add_argument("--no-isolate", action="store_true", help="measure in this process (debugging)")
    p.add_argument("--list", action="store_true", help="list the loaders and exit")
    return p


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from --quick or the full defaults."""
    full = {"classes": 10, "per_class": 200, "batch_sizes": "32,64,128", "rounds": 5,
            "images_per_round": 1280, "warmup_batches": 5, "timeout": 600,
            "train_image_size": None, "train_batch_sizes": None, "train_images_per_round": None}
    defaults = QUICK if args.quick else full
    for key, value in defaults.items():
        if getattr(args, key) is None and value is not None:
            setattr(args, key, _ints(value) if key.endswith("batch_sizes") else value)
    if args.threads is None:
        args.threads = _ints(str(usable_cores()) if args.quick else _default_threads())
    args.train_image_size = args.train_image_size or args.image_size
    args.train_batch_sizes = args.train_batch_sizes or args.batch_sizes
    args.train_images_per_round = args.train_images_per_round or args.images_per_round
    if args.train_device == "auto":
        import torch

        args.train_device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def _list_loaders() -> int:
    for name, spec in LOADERS.items():
        reason = spec.unavailable()
        print(f"{name:<24} {'ok' if not reason else reason:<40} {spec.description}")
    return 0


def _grids(args: argparse.Namespace) -> tuple[Grid | None, Grid | None]:
    """The loader-alone grid (None with --train-only) and the training grid (None without
    --train; the synthetic reference first and last)."""
    loaders = tuple(args.loaders.split(",")) if args.loaders else tuple(default_loaders())
    if SYNTHETIC in loaders:
        raise SystemExit(f"run.py: error: {SYNTHETIC!r} is the reference of --train, not a loader")
    if args.train_only and not args.train:
        raise SystemExit("run.py: error: --train-only needs --train MODEL")
    common = {"threads": args.threads, "warmup_batches": args.warmup_batches,
              "rounds": args.rounds, "timeout_s": args.timeout}
    alone = None if args.train_only else Grid(
        loaders=loaders, batch_sizes=args.batch_sizes, image_size=args.image_size,
        images_per_round=args.images_per_round, gil_seconds=args.gil_seconds, **common)
    training = Grid(loaders=(SYNTHETIC, *loaders, SYNTHETIC), batch_sizes=args.train_batch_sizes,
                    image_size=args.train_image_size, images_per_round=args.train_images_per_round,
                    train_model=args.train, train_device=args.train_device,
                    **common) if args.train else None
    return alone, training


def _gpu_ceiling(args: argparse.Namespace, grid: Grid | None, data) -> dict | None:
    """DALI's mixed-decoder ceiling where a GPU loader is in the grid (else None)."""
    gpu_rows = [n for n in (grid.loaders if grid else ()) if LOADERS[n].device == "cuda"]
    if not gpu_rows or LOADERS["dali-file-gpu"].unavailable():  # no CUDA, or no DALI
        return None
    print("measuring the GPU decode ceiling (DALI mixed decoder, decode only) ...", flush=True)
    result = gpu_decode_ceiling_isolated(data.folder, batch_sizes=grid.batch_sizes,
                                         threads=max(grid.threads), hw_decoder_loads=args.gpu_splits,
                                         min_seconds=1.0 if args.quick else 3.0, timeout_s=args.timeout)
    for line in report.format_ceilings(None, result):
        print(line, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        return _list_loaders()
    args = _resolve(args)
    grid, train_grid = _grids(args)
    loaders = (grid or train_grid).loaders
    started = time.perf_counter()
    spec = None if args.data else sample_spec(args.classes, args.per_class, tuple(args.short_side))
    data = prepare_data(os.path.abspath(args.work), folder=args.data, spec=spec,
                        webdataset="webdataset" in loaders)
    print(data.description)
    for fmt, stats in data.pack.items():
        print(f"packed {fmt}: {stats['seconds']:.1f} s, {stats['store_bytes'] / 1e6:.1f} MB "
              f"({stats['images_per_s']:.0f} images/s)")
    ceiling = decode_ceiling(data.folder, usable_cores(), min_seconds=1.0 if args.quick else 3.0)
    print(f"decode ceiling: {ceiling['decode_per_core_images_per_s']:.0f} img/s per core x "
          f"{ceiling['cores']} = {ceiling['ceiling_images_per_s']:.0f} img/s", flush=True)
    gpu_ceiling = _gpu_ceiling(args, grid, data)
    rows = run_suite(grid, data, isolate=not args.no_isolate, on_row=_progress) if grid else []
    summary = report.summarize(rows, ceiling, gpu_ceiling)
    training = _run_training(args, train_grid, data, rows)
    if grid:
        print()
        print(report.format_table(rows))
        print()
        print(report.format_summary(summary, ceiling, gpu_ceiling))
    if training:
        print()
        print(report.format_training_table(training["results"]))
        print()
        print(report.format_training_summary(training["summary"]))
    full_report = {"meta": {**report.machine_info(usable_cores()), "quick": args.quick,
                            "wall_s": time.perf_counter() - started},
                   "data": data.to_json(), "ceiling": ceiling, "gpu_ceiling": gpu_ceiling,
                   "grid": grid.__dict__ if grid else None,
                   "summary": summary, "results": rows, "training": training}
    for path in report.write_all(args.out, full_report):
        print(f"wrote {path}")
    return 0


def _run_training(args: argparse.Namespace, grid: Grid | None, data, loader_rows: list) -> dict | None:
    if grid is None:
        return None
    print(f"training {grid.train_model} on {grid.train_device}, fed by each loader "
          f"(image size {grid.image_size}, batch {','.join(map(str, grid.batch_sizes))}):", flush=True)
    rows = run_suite(grid, data, isolate=not args.no_isolate, on_row=_progress)
    summary = report.summarize_training(rows, loader_rows, grid.train_model)
    return {"model": grid.train_model, "device": grid.train_device, "grid": grid.__dict__,
            "summary": summary, "results": rows}


def _progress(row: dict) -> None:
    where = f"{row['loader']} threads={row.get('threads', '-')} batch={row.get('batch_size', '-')}"
    if row.get("status") == "ok":
        host = row.get("host_us_per_image")
        cost = f", {host:.0f} us/img on the iterating thread" if host is not None else ""
        print(f"  {where}: {row['images_per_s']:.0f} img/s{cost}", flush=True)
    else:
        print(f"  {where}: {row.get('status')}: {row.get('note')}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
