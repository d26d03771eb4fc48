"""The op lists people write, each against torchvision ``transforms.v2`` with the same ops: img/s
of torchvision (ImageFolder + v2 + DataLoader with persistent workers), fastload's DALI backend
and fastload's torch backend, timed in interleaved rounds (every loader alive in one process,
the order reversed every other round), with each round's ratio to torchvision.

    python benchmarks/op_lists.py                         # 2 threads, batch 64, 224 px, 1,000 photos
    python benchmarks/op_lists.py --lists colorjitter,radiology --threads 16 --batch-size 256

The lists (DESIGN.md section 5): the train preset; + ColorJitter(0.4, 0.4, 0.4, 0.1); the
radiology list (horizontal and vertical flips, Rotate(15)); + GaussianBlur (sigma 0.1-2, p=0.5,
kernel 13 in torchvision, which needs one; fastload's window follows the sigma). Every list ends
in Normalize: float32 NCHW batches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Iterator
from typing import Any

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.config import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from benchmarks.data import prepare_data, sample_spec  # noqa: E402
from benchmarks.harness import timed_round  # noqa: E402
from fastload.training import endless_batches  # noqa: E402

__all__ = ["LISTS", "fastload_ops", "main", "measure", "torchvision_ops"]

LISTS = ("preset", "colorjitter", "radiology", "blur")
BLUR_SIGMA, BLUR_P, BLUR_KERNEL = (0.1, 2.0), 0.5, 13


def fastload_ops(name: str, size: int) -> list[Any]:
    """The list as fastload ops."""
    from fastload import ops

    crop, norm = ops.RandomResizedCrop(size), ops.Normalize()
    return {"preset": [crop, ops.Flip(), norm],
            "colorjitter": [crop, ops.Flip(), ops.ColorJitter(0.4, 0.4, 0.4, 0.1), norm],
            "radiology": [crop, ops.Flip(horizontal=True, vertical=True), ops.Rotate(max_degrees=15), norm],
            "blur": [crop, ops.Flip(), ops.GaussianBlur(sigma=BLUR_SIGMA, p=BLUR_P), norm]}[name]


def torchvision_ops(name: str, size: int) -> Any:
    """The same list as torchvision v2 transforms on uint8 tensors, then float32 and Normalize."""
    import torch
    from torchvision.transforms import v2

    head = [v2.ToImage(), v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    extra = {"preset": [],
             "colorjitter": [v2.ColorJitter(0.4, 0.4, 0.4, 0.1)],
             "radiology": [v2.RandomVerticalFlip(), v2.RandomRotation(15)],
             "blur": [v2.RandomApply([v2.GaussianBlur(BLUR_KERNEL, sigma=BLUR_SIGMA)], p=BLUR_P)]}[name]
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(head + extra + tail)


def _loaders(name: str, folder: str, store: str, size: int, threads: int, batch_size: int) -> dict[str, Any]:
    import torch
    from torchvision import datasets

    import fastload

    common = {"batch_size": batch_size, "shuffle": True, "drop_last": True}
    torchvision = torch.utils.data.DataLoader(
        datasets.ImageFolder(folder, torchvision_ops(name, size)), num_workers=threads,
        persistent_workers=True, generator=torch.Generator().manual_seed(0), **common)
    augment = fastload_ops(name, size)
    return {"torchvision": torchvision,
            "fastload dali": fastload.Loader(store, augment=augment, backend="dali", device="cpu",
                                             num_threads=threads, seed=0, **common),
            "fastload torch": fastload.Loader(store, augment=augment, backend="torch", device="cpu",
                                              num_threads=threads, seed=0, **common)}


def measure(folder: str, store: str, *, lists: list[str], size: int, threads: int, batch_size: int,
            rounds: int, batches: int, settle: float = 1.0) -> dict[str, dict[str, Any]]:
    """Per list and loader: median img/s over the rounds, and the median of each round's ratio
    to torchvision (with its range)."""
    streams: dict[tuple[str, str], Iterator] = {}
    for name in lists:
        for loader, made in _loaders(name, folder, store, size, threads, batch_size).items():
            streams[(name, loader)] = endless_batches(made)
            for _ in range(3):  # start workers, build pipelines
                next(streams[(name, loader)])
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in streams}
    keys = list(streams)
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            m = timed_round(streams[key], batches, flush=2, settle=settle)
            rates[key].append(m["images"] / m["seconds"])
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n}/{who} {rates[(n, who)][-1]:.0f}" for n, who in keys),
              flush=True)
    out: dict[str, dict[str, Any]] = {}
    for name, loader in keys:
        ratios = [a / b for a, b in zip(rates[(name, loader)], rates[(name, "torchvision")])]
        out.setdefault(name, {})[loader] = {
            "images_per_s": statistics.median(rates[(name, loader)]), "rounds": rates[(name, loader)],
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| op list | torchvision img/s | fastload DALI | ratio (range) | fastload torch | ratio (range) |",
             "|---|---|---|---|---|---|"]
    for name, by in results.items():
        cells = [f"{by['torchvision']['images_per_s']:.0f}"]
        for loader in ("fastload dali", "fastload torch"):
            r = by[loader]
            cells += [f"{r['images_per_s']:.0f}", f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="bench-data", help="generated photos and store (reused)")
    p.add_argument("--data", help="an ImageFolder tree to use instead of generated photos")
    p.add_argument("--images", type=int, default=1000, help="generated photos (10 classes)")
    p.add_argument("--lists", default=",".join(LISTS), help=f"comma-separated subset of {', '.join(LISTS)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=8, help="timed batches per loader per round")
    p.add_argument("--settle", type=float, default=1.0, help="seconds after each turn for prefetching to end")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    lists = [n.strip() for n in args.lists.split(",") if n.strip()]
    unknown = [n for n in lists if n not in LISTS]
    if unknown:
        raise SystemExit(f"op_lists.py: unknown lists {unknown}; known: {', '.join(LISTS)}")
    data = prepare_data(os.path.abspath(args.work), folder=args.data,
                        spec=sample_spec(10, max(1, args.images // 10)), formats=("lmdb",))
    print(data.description, flush=True)
    results = measure(data.folder, data.stores["lmdb"], lists=lists, size=args.image_size, threads=args.threads,
                      batch_size=args.batch_size, rounds=args.rounds, batches=args.batches, settle=args.settle)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
