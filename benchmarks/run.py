"""Compare image loaders on the same training work: the fastload benchmark suite.

    python benchmarks/run.py                  # generate an ImageNet-like sample set, pack, compare
    python benchmarks/run.py --quick          # a smoke run: under 2 minutes on 2 cores
    python benchmarks/run.py --data ~/datasets/train --threads 1,2,4,8 --batch-sizes 32,64,128,256
    python benchmarks/run.py --list           # the loaders and whether each can run here

Every configuration runs in a fresh subprocess. Results go to ./results/ (results.json,
results.csv, throughput_vs_threads.png, throughput_vs_batch_size.png).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # noqa: E402
from benchmarks.data import decode_ceiling, prepare_data, sample_spec  # noqa: E402
from benchmarks.harness import usable_cores  # noqa: E402
from benchmarks.loaders import LOADERS, default_loaders  # noqa: E402
from benchmarks.suite import Grid, run_suite  # noqa: E402

# --quick: small enough for CI on 2 cores (< 2 minutes including generation and packing).
QUICK = {"classes": 4, "per_class": 50, "batch_sizes": "64", "rounds": 3,
         "images_per_round": 256, "warmup_batches": 2, "timeout": 60}


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


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
    p.add_argument("--timeout", type=float, help="seconds before a configuration is killed (default 600)")
    p.add_argument("--quick", action="store_true", help="small data, one configuration per loader")
    p.add_argument("--no-isolate", action="store_true", help="measure in this process (debugging)")
    p.add_argument("--list", action="store_true", help="list the loaders and exit")
    return p


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset options from --quick or the full defaults."""
    full = {"classes": 10, "per_class": 200, "batch_sizes": "32,64,128", "rounds": 5,
            "images_per_round": 1280, "warmup_batches": 5, "timeout": 600}
    defaults = QUICK if args.quick else full
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, _ints(value) if key == "batch_sizes" else value)
    if args.threads is None:
        args.threads = _ints(str(usable_cores()) if args.quick else _default_threads())
    return args


def _list_loaders() -> int:
    for name, spec in LOADERS.items():
        reason = spec.unavailable()
        print(f"{name:<24} {'ok' if not reason else reason:<40} {spec.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        return _list_loaders()
    args = _resolve(args)
    loaders = tuple(args.loaders.split(",")) if args.loaders else tuple(default_loaders())
    grid = Grid(loaders=loaders, threads=args.threads, batch_sizes=args.batch_sizes,
                image_size=args.image_size, warmup_batches=args.warmup_batches,
                images_per_round=args.images_per_round, rounds=args.rounds, timeout_s=args.timeout)
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
    rows = run_suite(grid, data, isolate=not args.no_isolate, on_row=_progress)
    summary = report.summarize(rows, ceiling)
    print()
    print(report.format_table(rows))
    print()
    print(report.format_summary(summary, ceiling))
    full_report = {"meta": {**report.machine_info(usable_cores()), "quick": args.quick,
                            "wall_s": time.perf_counter() - started},
                   "data": data.to_json(), "ceiling": ceiling, "grid": grid.__dict__,
                   "summary": summary, "results": rows}
    for path in report.write_all(args.out, full_report):
        print(f"wrote {path}")
    return 0


def _progress(row: dict) -> None:
    where = f"{row['loader']} threads={row.get('threads', '-')} batch={row.get('batch_size', '-')}"
    if row.get("status") == "ok":
        print(f"  {where}: {row['images_per_s']:.0f} img/s", flush=True)
    else:
        print(f"  {where}: {row.get('status')}: {row.get('note')}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
