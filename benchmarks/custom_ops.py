"""What a custom operator costs, through the real Loader (DALI backend): img/s of the train
preset alone and with each kind of custom op, measured in interleaved rounds (so drift on a
shared machine hits every configuration alike), and the iterating thread's CPU time per image.

    python benchmarks/custom_ops.py                          # CPU, 2 threads, batch 64, 224 px
    python benchmarks/custom_ops.py --device cuda --threads 16 --batch-size 256

Configurations (DESIGN.md section 5: each may cost at most 25% of the train preset's throughput
on 2 CPU cores, 15% on a GPU):

* ``train``: RandomResizedCrop(224), Flip, Normalize;
* ``+ add_noise @op``: the README's per-sample op after Normalize, with the torch backend's
  per-sample generator (on the CPU: in the host stage's per-sample loop; on the GPU: in the tail
  stage, once per sample);
* ``+ add_noise @op(vectorized=True)``: the same body, declared elementwise (called once per
  batch on the GPU; per sample on the CPU, as above);
* ``+ x * 0.9 @op after Normalize``: the cheapest op there is (issue 20's), float32 in and out;
* ``+ 255 - x @batch_op``: a trivial batch op before Normalize (uint8 across the pipeline, the
  batch op and the normalization in the tail stage);
* ``+ 255 - x @op at the end``: the same per sample (on the CPU in the host stage, before the
  output's Normalize);
* ``+ 255 - x @op mid-list``: the same op followed by a Flip (on the CPU in the host stage; on
  the GPU it stays in DALI, through ``fn.python_function``);
* ``+ mixup/cutmix``: the train preset with ``batch_transforms=[Mixup, CutMix]`` (each with
  p=0.5), whole-batch transforms on the loader's device that also make soft labels.

Each row gives img/s (median of the rounds; on a shared machine this swings with other
people's work), the CPU time per image of the whole process tree (the Loader's thread, DALI's
threads, the feed workers), and two costs against ``train``: from img/s, and from CPU time
(``1 - cpu(train) / cpu(config)``: the throughput lost on cores that do nothing else, which is
what a CPU-bound loader gets; it holds still while the machine is shared). "The op alone" is
the op's function called by itself on a batch of 64 images: what the op costs in any loader.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import fastload  # noqa: E402
from benchmarks.data import prepare_data, sample_spec  # noqa: E402
from benchmarks.harness import timed_round  # noqa: E402
from fastload import ops  # noqa: E402
from fastload.training import endless_batches  # noqa: E402

__all__ = ["CONFIGS", "configs", "main", "measure"]


@fastload.op
def add_noise(x, rng, sigma=0.05):
    """The README's op, as written there."""
    xp = fastload.array_namespace(x)
    return x + sigma * xp.asarray(rng.standard_normal(x.shape, dtype="float32"), dtype=x.dtype)


@fastload.op(vectorized=True)
def add_noise_batched(x, rng, sigma=0.05):
    """The same body, declared elementwise: called once with the whole NHWC batch."""
    xp = fastload.array_namespace(x)
    return x + sigma * xp.asarray(rng.standard_normal(x.shape, dtype="float32"), dtype=x.dtype)


@fastload.op
def scale(x):
    """The cheapest op there is (issue 20's): one multiply, float32 in and out."""
    return x * 0.9


@fastload.batch_op
def invert_batch(images, rng):
    """A trivial batch op on uint8 images."""
    return [255 - x for x in images]


@fastload.op
def invert(x):
    """The same, per sample."""
    return 255 - x


def configs(size: int) -> dict[str, list[Any]]:
    """Name -> op list of every measured configuration."""
    crop, flip, norm = ops.RandomResizedCrop(size), ops.Flip(horizontal=True), ops.Normalize()
    return {
        "train": [crop, flip, norm],
        "+ add_noise @op": [crop, flip, norm, add_noise.with_args(sigma=0.02)],
        "+ add_noise @op(vectorized=True)": [crop, flip, norm, add_noise_batched.with_args(sigma=0.02)],
        "+ x * 0.9 @op after Normalize": [crop, flip, norm, scale],
        "+ 255 - x @batch_op": [crop, flip, invert_batch, norm],
        "+ 255 - x @op at the end": [crop, flip, invert, norm],
        "+ 255 - x @op mid-list": [crop, invert, flip, norm],
        MIX: [crop, flip, norm],
    }


MIX = "+ mixup/cutmix (batch_transforms)"
CONFIGS = tuple(configs(224))


def batch_transforms(name: str) -> list[Any] | None:
    """The ``batch_transforms=`` of a configuration (None for op-list-only ones)."""
    if name != MIX:
        return None
    from fastload import transforms

    return [transforms.Mixup(alpha=0.2, p=0.5), transforms.CutMix(alpha=1.0, p=0.5)]


def _custom_op(op_list: list[Any]) -> Any:
    return next((op for op in op_list if isinstance(op, fastload.ops.CustomOp)), None)


def op_alone_ms(op: Any, batch_size: int, size: int, normalized: bool) -> float:
    """CPU ms per image of the op's function by itself on a batch of ``size`` images (uint8, or
    normalized float32 when it follows Normalize), generators made beforehand: what the op
    costs in any loader, the floor of its cost in this one."""
    rng = np.random.default_rng(0)
    if normalized:
        images = [rng.standard_normal((size, size, 3), dtype=np.float32) for _ in range(batch_size)]
    else:
        images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch_size)]
    if op.batch:
        start = time.thread_time()
        op._invoke(images, op.sample_rng([0, 0, 0]), dict(op.args))
        return (time.thread_time() - start) / batch_size * 1e3
    rngs = [op.sample_rng([0, 0, i]) for i in range(batch_size)]
    start = time.thread_time()
    for x, r in zip(images, rngs):
        op._invoke(x, r, dict(op.args))
    return (time.thread_time() - start) / batch_size * 1e3


def measure(store: str, *, names: list[str], size: int, batch_size: int, threads: int, device: str,
            rounds: int, batches: int, flush: int = 4) -> dict[str, dict[str, Any]]:
    """img/s (median of ``rounds``) and iterating-thread us/img of each named configuration.

    Every configuration has its own Loader, kept alive; each round measures them in turn.
    """
    table = configs(size)
    count = len(fastload.open_store(store))
    streams = {}
    for name in names:
        loader = fastload.Loader(store, batch_size=batch_size, augment=table[name], backend="dali", device=device,
                                 num_threads=threads, shuffle=True, seed=0, drop_last=True,
                                 weights=np.ones(count), num_samples=batch_size * 5_000,
                                 batch_transforms=batch_transforms(name))
        streams[name] = endless_batches(loader)
        try:
            for _ in range(3):  # build the pipeline, start the feed, warm up
                next(streams[name])
        except Exception as exc:  # report the configuration, measure the others
            print(f"{name}: failed, left out: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
            del streams[name]
            loader.close()
    names = [n for n in names if n in streams]
    rates: dict[str, list[float]] = {n: [] for n in names}
    host: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    alone: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            m = timed_round(streams[name], batches, flush, tree=True)
            rates[name].append(m["images"] / m["seconds"])
            host[name].append(m["thread"] / m["images"] * 1e6)
            cpu[name].append(m["tree"] / m["images"] * 1e3)
            op = _custom_op(table[name])
            if op is not None:
                alone[name].append(op_alone_ms(op, batch_size, size, normalized=isinstance(
                    table[name][table[name].index(op) - 1], ops.Normalize)))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {rates[n][-1]:.0f} img/s {cpu[n][-1]:.2f} ms"
                                                        for n in names), flush=True)
    base, base_cpu = statistics.median(rates[names[0]]), statistics.median(cpu[names[0]])
    return {n: {"images_per_s": statistics.median(rates[n]), "rounds": rates[n],
                "overhead_pct": 100.0 * (1.0 - statistics.median(rates[n]) / base),
                "cpu_ms_per_image": statistics.median(cpu[n]), "cpu_rounds": cpu[n],
                "cpu_overhead_pct": 100.0 * (1.0 - base_cpu / max(statistics.median(cpu[n]), 1e-9)),
                "host_us_per_image": statistics.median(host[n]),
                "op_alone_ms_per_image": statistics.median(alone[n]) if alone[n] else 0.0} for n in names}


def _table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| configuration | img/s (median) | rounds min-max | cost (img/s) | CPU ms/img | cost (CPU) "
             "| iterating thread us/img | the op alone, ms/img |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cost = "-" if name == "train" else f"{r['overhead_pct']:.0f}%"
        cpu_cost = "-" if name == "train" else f"{r['cpu_overhead_pct']:.0f}%"
        alone = f"{r['op_alone_ms_per_image']:.3f}" if r["op_alone_ms_per_image"] else "-"
        lines.append(f"| {name} | {r['images_per_s']:.0f} | {min(r['rounds']):.0f}-{max(r['rounds']):.0f} | "
                     f"{cost} | {r['cpu_ms_per_image']:.2f} | {cpu_cost} | {r['host_us_per_image']:.0f} | {alone} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="bench-data", help="where the generated images and store go")
    p.add_argument("--data", help="an ImageFolder tree to use instead of generated images")
    p.add_argument("--images", type=int, default=1000, help="generated images (10 classes)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=15, help="timed batches per configuration per round")
    p.add_argument("--only", help="comma-separated configuration names (train is always first)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    data = prepare_data(os.path.abspath(args.work), folder=args.data,
                        spec=sample_spec(10, max(1, args.images // 10)), formats=("lmdb",))
    names = list(CONFIGS)
    if args.only:
        names = ["train"] + [n for n in args.only.split(",") if n != "train"]
    import nvidia.dali

    print(f"{data.description}\nDALI {nvidia.dali.__version__}, device {args.device}, {args.threads} threads, "
          f"batch {args.batch_size}, {args.image_size} px, {args.rounds} rounds x {args.batches} batches",
          flush=True)
    results = measure(data.stores["lmdb"], names=names, size=args.image_size, batch_size=args.batch_size,
                      threads=args.threads, device=args.device, rounds=args.rounds, batches=args.batches)
    print(_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "dali": nvidia.dali.__version__, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
