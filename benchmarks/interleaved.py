"""Ratios between loaders that noise cannot fake: every loader alive in one process, timed in
interleaved rounds (the order reversed every other round), each ratio taken within a round.

    python benchmarks/interleaved.py                                  # the issue-8 comparison, 2 cores
    python benchmarks/interleaved.py --loaders dali-file,fastload-dali-lmdb --threads 16 --batch-size 256

The grid in run.py measures each configuration in its own process, minutes apart: on a shared
machine its ratios swing by +-30% between runs. Here each round times every loader for the same
number of batches back to back, so drift (other tenants, thermal state) hits all of them alike;
the report gives each loader's median img/s, its per-round ratio to the baseline (median and
range), and the CPU time of the iterating thread per image. Each round of a loader starts with a
few untimed batches (those its workers prefetched while another loader ran) and ends with a
pause in which its prefetching finishes, so no loader's background work lands in another's round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.config import BenchConfig
from benchmarks.data import prepare_data
from benchmarks.harness import timed_round
from benchmarks.loaders import LOADERS
from fastload.training import endless_batches

DEFAULT = "torchvision,dali-file,fastload-dali-lmdb,fastload-dali-hdf5,fastload-dali-lmdb-raw"


def measure(names: list[str], data: Any, threads: int, batch_size: int, rounds: int, batches: int,
            baseline: str, flush: int = 4, settle: float = 2.0) -> dict[str, dict[str, float]]:
    streams = {}
    for name in names:
        config = BenchConfig(loader=name, threads=threads, batch_size=batch_size)
        loader = LOADERS[name].build(data, config)
        streams[name] = endless_batches(loader)
        for _ in range(3):  # start workers, build pipelines
            next(streams[name])
    rates: dict[str, list[float]] = {n: [] for n in names}
    host: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            m = timed_round(streams[name], batches, flush, settle)
            rates[name].append(m["images"] / m["seconds"])
            host[name].append(m["thread"] / m["images"] * 1e6)
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in names), flush=True)
    out = {}
    for name in names:
        ratios = [a / b for a, b in zip(rates[name], rates[baseline])]
        out[name] = {"images_per_s": statistics.median(rates[name]), "ratio": statistics.median(ratios),
                     "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "host_us_per_image": statistics.median(host[name])}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loaders", default=DEFAULT, help=f"comma-separated (default: {DEFAULT})")
    parser.add_argument("--baseline", default="torchvision")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batches", type=int, default=10, help="batches per loader per round")
    parser.add_argument("--work", default="bench-data", help="generated data and stores (reused)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.loaders.split(",") if n.strip()]
    missing = [n for n in names if n not in LOADERS or LOADERS[n].unavailable()]
    if missing:
        raise SystemExit(f"cannot run here: {missing}")
    if args.baseline not in names:
        names.insert(0, args.baseline)
    data = prepare_data(args.work)
    results = measure(names, data, args.threads, args.batch_size, args.rounds, args.batches, args.baseline)
    print(f"\n{args.rounds} interleaved rounds of {args.batches} batches of {args.batch_size}, "
          f"{args.threads} threads; ratios per round against {args.baseline}")
    print(f"{'loader':<26} {'img/s':>7} {'ratio':>6} {'range':>13} {'us/img':>7}")
    for name, r in results.items():
        print(f"{name:<26} {r['images_per_s']:>7.0f} {r['ratio']:>6.2f} "
              f"{r['ratio_min']:>6.2f}-{r['ratio_max']:<6.2f} {r['host_us_per_image']:>7.0f}")


if __name__ == "__main__":
    main()
