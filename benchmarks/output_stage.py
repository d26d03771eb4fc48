"""Before/after figures for a change to the output stage (normalize, dtype, layout): the same
loaders timed on two source trees, interleaved, each round in a fresh process per tree.

    git archive main | tar -x -C /tmp/base            # the tree to compare against
    python -m benchmarks.output_stage --base /tmp/base --new . --rounds 3

Per tree and configuration: img/s and the CPU time of the thread that iterates the loader per
image (``time.thread_time()``, the host cost no core count parallelizes), and the whole
process's CPU time per image (the DALI backend's host and batch stages run in its threads);
medians over the rounds. Configurations: the DALI backend (CPU) and the torch backend, each
with the train preset and the ColorJitter list; the DALI backend with a custom op at the end (the
batch stage writes the output) and with uint8 NHWC output (no Normalize).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

import fastload

CONFIGS = ("dali-preset", "dali-colorjitter", "dali-tail", "dali-uint8-nhwc", "torch-preset", "torch-colorjitter")


@fastload.op
def shift(x: Any, rng: Any) -> Any:
    """A cheap per-sample custom op: the batch stage then writes the output."""
    return x + np.float32(rng.random() * 0.01)


def _augment(name: str, size: int) -> list[Any]:
    from fastload import ops

    crop, flip, norm = ops.RandomResizedCrop(size), ops.Flip(), ops.Normalize()
    if name.endswith("colorjitter"):
        return [crop, flip, ops.ColorJitter(0.4, 0.4, 0.4, 0.1), norm]
    if name.endswith("tail"):
        return [crop, flip, norm, shift]
    if name.endswith("nhwc"):
        return [crop, flip]
    return [crop, flip, norm]


def _measure(store: str, name: str, *, threads: int, batch_size: int, size: int, passes: int) -> dict[str, float]:
    backend = name.partition("-")[0]
    extra = {"output_dtype": "uint8", "layout": "NHWC"} if name.endswith("nhwc") else {}
    loader = fastload.Loader(store, augment=_augment(name, size), backend=backend, device="cpu",
                             num_threads=threads, batch_size=batch_size, shuffle=True, seed=0, drop_last=True, **extra)
    for _ in loader:  # warm-up pass: workers, pipelines, pools, buffers
        pass
    images = 0
    wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
    for _ in range(passes):
        for batch, _labels in loader:
            images += len(batch)
    wall, thread = time.perf_counter() - wall, time.thread_time() - thread
    process = time.process_time() - process
    loader.close()
    return {"images_per_s": images / wall, "thread_us_per_image": 1e6 * thread / images,
            "process_us_per_image": 1e6 * process / images}


def _child(args: argparse.Namespace) -> None:
    out = {name: _measure(args.store, name, threads=args.threads, batch_size=args.batch_size, size=args.size,
                          passes=args.passes) for name in args.configs.split(",")}
    print("RESULT " + json.dumps(out), flush=True)


def _store(work: str, images: int) -> str:
    store = os.path.join(work, f"photos{images}.lmdb")
    if not os.path.exists(store):
        folder = os.path.join(work, f"photos{images}")
        fastload.make_sample_folder(folder, fastload.SampleSpec(num_classes=4, per_class=images // 4, quality=90))
        fastload.pack(folder, store)
    return store


def _run_tree(tree: str, store: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    here = os.path.abspath(__file__)
    command = [sys.executable, here, "--child", "--store", store, "--configs", args.configs,
               "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--size", str(args.size),
               "--passes", str(args.passes)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=os.path.abspath(tree))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{tree}: the run failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="the source tree to compare against")
    parser.add_argument("--new", default=".", help="the changed source tree")
    parser.add_argument("--work", default="/tmp/fastload-output-bench")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--passes", type=int, default=2, help="timed passes over the store per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    os.makedirs(args.work, exist_ok=True)
    store = _store(args.work, args.images)
    trees = {"base": args.base, "new": args.new} if args.base else {"new": args.new}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {who: [] for who in trees}
    for r in range(args.rounds):
        for who in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
            runs[who].append(_run_tree(trees[who], store, args))
            print(f"round {r + 1} {who}: " + ", ".join(f"{k} {v['images_per_s']:.0f}" for k, v in runs[who][-1].items()),
                  flush=True)
    summary = {who: {name: {m: statistics.median(run[name][m] for run in got) for m in got[0][name]}
                     for name in got[0]} for who, got in runs.items()}
    print("| config | " + " | ".join(f"{who} img/s | {who} thread us/img | {who} process us/img" for who in trees) + " |")
    for name in args.configs.split(","):
        cells = [f"{summary[w][name]['images_per_s']:.0f} | {summary[w][name]['thread_us_per_image']:.0f} | "
                 f"{summary[w][name]['process_us_per_image']:.0f}" for w in trees]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
