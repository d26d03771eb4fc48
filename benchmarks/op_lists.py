"""The op lists people write, each against torchvision ``transforms.v2`` with the same ops: img/s
of torchvision (a Dataset + v2 + DataLoader with persistent workers), fastload's DALI backend
(on the CPU) and fastload's torch backend, timed in interleaved rounds (every loader alive in one
process, the order reversed every other round), with each round's ratio to torchvision.

    python benchmarks/op_lists.py                         # 2 threads, batch 64, 224 px, 1,000 photos
    python benchmarks/op_lists.py --lists colorjitter,radiology --threads 16 --batch-size 256
    python benchmarks/op_lists.py --lists gray16,ch6 --other-images 200

The lists (DESIGN.md section 5; "size" is ``--image-size``):

* on generated photo-like JPEGs (torchvision: ``ImageFolder``, PIL decode, ``v2.ToImage`` first):
  ``preset``: RandomResizedCrop(size), Flip, Normalize; ``colorjitter``: + ColorJitter(0.4, 0.4,
  0.4, 0.1); ``radiology``: horizontal and vertical flips, Rotate(15); ``affine``: horizontal and
  vertical flips, RandomAffine(15 degrees, shifts of 6.25%, scale 0.9-1.1: albumentations'
  ShiftScaleRotate as Kaggle lists write it; bilinear on both sides); ``trivialaugment``: the preset
  + TrivialAugmentWide (torchvision's reference recipes' ``ta_wide``, on uint8 before Normalize);
  ``randaugment``: the same with RandAugment(num_ops=2, magnitude=9) (the recipes' ``ra``);
  ``blur``: + GaussianBlur
  (sigma 0.1-2, p=0.5, kernel 13 in torchvision, which needs one; fastload's window follows the
  sigma); ``custom``: the preset + a trivial custom op after Normalize (``@fastload.op``
  ``x * 0.9``; torchvision: the same function in ``v2.Lambda``); ``eval``: Resize(shorter side
  round(size x 256/224)), CenterCrop(size), Normalize; ``resize-crop``: the older ImageNet recipe,
  the same Resize, then RandomCrop(size), Flip, Normalize; ``uint8``: the preset without Normalize,
  ``output_dtype="uint8"`` (torchvision: uint8 tensors, no ToDtype);
* ``gray16``: 16-bit grayscale PNGs of about 512 px (short side 448-576), in their own folder and
  store: RandomResizedCrop(round(size x 256/224)), horizontal and vertical flips, Normalize with
  one mean/std. torchvision: a Dataset reading each PNG with ``cv2.imread(IMREAD_UNCHANGED)``
  into a 1xHxW uint16 tensor (v2 crops, resizes and flips uint16), then ToDtype(float32, scale)
  and Normalize;
* ``ch6``: microscopy-like 6-channel uint16 arrays, 512x512, as ``.npy`` files
  (``benchmarks.data.make_array_folder``) in their own folder and store: RandomResizedCrop(size),
  horizontal and vertical flips, Normalize with 6 means/stds. torchvision: a Dataset doing
  ``np.load`` into a 6xHxW uint16 tensor, then the same v2 ops.

* ``float32``: the same kind of samples with 3 channels as float32 in 0..1 (what a dataset already
  scaled, or DICOM real values, looks like), 512x512 ``.npy`` files: RandomResizedCrop(size),
  horizontal and vertical flips, Normalize with 3 means/stds. torchvision: ``np.load`` into a
  3xHxW float32 tensor, then the same v2 ops.

* ``gray16-raw``, ``ch6-raw``: the same files and ops, fastload reading a store packed with
  ``payload="raw"`` (decoded arrays: no PNG decode, no .npy relayout per read; larger stores), the
  torchvision side unchanged. This is what fastload offers for decode-bound 16-bit data: a 16-bit
  PNG of ~512 px takes ~5 ms to decode with OpenCV or PIL, most of a sample's cost on both sides.

Every list but ``uint8`` ends in Normalize (or the custom op after it): float32 NCHW batches.
``--images`` is the photo count; the gray16, ch6 and float32 sets have ``--other-images`` samples (a
6x512x512 uint16 sample is 3 MB). A fastload loader that fails on a list is reported (``failed,
left out``) and the others are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

if __package__ in (None, ""):  # run as a script: make the ``benchmarks`` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastload  # noqa: E402
from benchmarks.config import IMAGENET_MEAN, IMAGENET_STD, BenchData  # noqa: E402
from benchmarks.data import ArraySpec, prepare_data, sample_spec  # noqa: E402
from benchmarks.harness import timed_round  # noqa: E402
from fastload.training import endless_batches  # noqa: E402

__all__ = ["BASELINES", "DATA_KINDS", "LISTS", "FileDataset", "fastload_ops", "main", "measure", "prepare",
           "scale", "torchvision_dataset", "torchvision_ops"]

LISTS = ("preset", "colorjitter", "radiology", "affine", "trivialaugment", "randaugment", "blur", "custom", "eval", "resize-crop", "uint8", "gray16",
         "gray16-raw", "ch6", "ch6-raw", "float32")
# The data each list runs on: generated photos (or --data), 16-bit gray PNGs, 6-channel arrays,
# float32 RGB arrays.
DATA_KINDS = {name: "photos" for name in LISTS} | {name: name.removesuffix("-raw") for name in LISTS if "16" in name
                                                    or "ch6" in name or "float" in name}
# "-raw" lists: the same files and ops, fastload reading a store of decoded arrays (pack's
# payload="raw": no decode per read) where the others hold the files' own bytes
STORES = {name: "lmdb-raw" if name.endswith("-raw") else "lmdb" for name in LISTS}
BASELINES = {"photos": "ImageFolder (PIL)", "gray16": "Dataset: cv2.imread uint16", "ch6": "Dataset: np.load uint16",
             "float32": "Dataset: np.load float32"}
BLUR_SIGMA, BLUR_P, BLUR_KERNEL = (0.1, 2.0), 0.5, 13
# albumentations' ShiftScaleRotate defaults, as Kaggle lists write it (both sides bilinear)
AFFINE = {"degrees": 15, "translate": (0.0625, 0.0625), "scale": (0.9, 1.1)}
# About the generated sets' own statistics (0..1 units); the figures only need to be the same
# on both sides.
GRAY_MEAN, GRAY_STD = (0.45,), (0.25,)
CH6_MEAN, CH6_STD = (0.15, 0.16, 0.17, 0.2, 0.24, 0.22), (0.14, 0.12, 0.12, 0.14, 0.15, 0.12)
F32_MEAN, F32_STD = CH6_MEAN[:3], CH6_STD[:3]
LOADERS = ("torchvision", "fastload dali", "fastload torch")


@fastload.op
def scale(x):
    """The ``custom`` list's op: trivial, so the list measures what running a custom op costs."""
    return x * 0.9


def _scale(x: Any) -> Any:
    """The same for torchvision (module level: DataLoader workers can pickle it)."""
    return x * 0.9


def _resize_side(size: int) -> int:
    """The 256-for-224 side: the eval resize, and the gray16 crop."""
    return round(size * 256 / 224)


def fastload_ops(name: str, size: int) -> list[Any]:
    """The list as fastload ops."""
    from fastload import ops

    name = name.removesuffix("-raw")
    crop, norm, hv = ops.RandomResizedCrop(size), ops.Normalize(), ops.Flip(horizontal=True, vertical=True)
    return {"preset": [crop, ops.Flip(), norm],
            "colorjitter": [crop, ops.Flip(), ops.ColorJitter(0.4, 0.4, 0.4, 0.1), norm],
            "radiology": [crop, hv, ops.Rotate(max_degrees=15), norm],
            "affine": [crop, hv, ops.RandomAffine(**AFFINE), norm],
            "trivialaugment": [crop, ops.Flip(), ops.TrivialAugmentWide(), norm],
            "randaugment": [crop, ops.Flip(), ops.RandAugment(num_ops=2, magnitude=9), norm],
            "blur": [crop, ops.Flip(), ops.GaussianBlur(sigma=BLUR_SIGMA, p=BLUR_P), norm],
            "custom": [crop, ops.Flip(), norm, scale],
            "eval": [ops.Resize(shorter=_resize_side(size)), ops.CenterCrop(size), norm],
            "resize-crop": [ops.Resize(shorter=_resize_side(size)), ops.RandomCrop(size), ops.Flip(), norm],
            "uint8": [crop, ops.Flip()],
            "gray16": [ops.RandomResizedCrop(_resize_side(size)), hv, ops.Normalize(mean=GRAY_MEAN, std=GRAY_STD)],
            "ch6": [crop, hv, ops.Normalize(mean=CH6_MEAN, std=CH6_STD)],
            "float32": [crop, hv, ops.Normalize(mean=F32_MEAN, std=F32_STD)]}[name]


def torchvision_ops(name: str, size: int) -> Any:
    """The same list as torchvision v2 transforms on uint8 (uint16 for gray16 and ch6, float32 for
    float32) tensors, then float32 and Normalize (uint8: none)."""
    from torchvision.transforms import v2

    name = name.removesuffix("-raw")
    crop = v2.RandomResizedCrop(_resize_side(size) if name == "gray16" else size, antialias=True)
    head = [v2.ToImage(), crop, v2.RandomHorizontalFlip()]
    if name == "eval":
        head = [v2.ToImage(), v2.Resize(_resize_side(size), antialias=True), v2.CenterCrop(size)]
    if name == "resize-crop":
        head = [v2.ToImage(), v2.Resize(_resize_side(size), antialias=True), v2.RandomCrop(size),
                v2.RandomHorizontalFlip()]
    extra = {"preset": [], "custom": [], "eval": [], "resize-crop": [], "uint8": [],
             "colorjitter": [v2.ColorJitter(0.4, 0.4, 0.4, 0.1)],
             "radiology": [v2.RandomVerticalFlip(), v2.RandomRotation(15)],
             "affine": [v2.RandomVerticalFlip(), v2.RandomAffine(**AFFINE, interpolation=v2.InterpolationMode.BILINEAR)],
             "trivialaugment": [v2.TrivialAugmentWide()],
             "randaugment": [v2.RandAugment(num_ops=2, magnitude=9)],
             "blur": [v2.RandomApply([v2.GaussianBlur(BLUR_KERNEL, sigma=BLUR_SIGMA)], p=BLUR_P)],
             "gray16": [v2.RandomVerticalFlip()], "ch6": [v2.RandomVerticalFlip()], "float32": [v2.RandomVerticalFlip()]}[name]
    mean, std = {"gray16": (GRAY_MEAN, GRAY_STD), "ch6": (CH6_MEAN, CH6_STD),
                 "float32": (F32_MEAN, F32_STD)}.get(name, (IMAGENET_MEAN, IMAGENET_STD))
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    tail = {"uint8": [], "custom": tail + [v2.Lambda(_scale)]}.get(name, tail)
    return v2.Compose(head + extra + tail)


def _read_png16(path: str) -> np.ndarray:
    import cv2

    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"cv2.imread could not read {path}: expected a 16-bit grayscale PNG")
    return image[None]  # 1xHxW uint16


class FileDataset(torch.utils.data.Dataset):
    """An ImageFolder-like tree read by ``read(path) -> CxHxW array`` (a module-level function,
    so DataLoader workers can pickle it), then ``transform``: the gray16 and ch6 baselines."""

    def __init__(self, folder: str, read: Callable[[str], np.ndarray], transform: Any) -> None:
        from benchmarks.loaders import list_image_folder

        self.paths, self.labels = list_image_folder(folder)
        self.read, self.transform = read, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(torch.from_numpy(self.read(self.paths[index]))), self.labels[index]


def torchvision_dataset(name: str, folder: str, size: int) -> Any:
    """The list's torchvision-side dataset: ImageFolder for photos, else a ``FileDataset``."""
    from torchvision import datasets

    transform = torchvision_ops(name, size)
    kind = DATA_KINDS[name]
    if kind == "photos":
        return datasets.ImageFolder(folder, transform)
    return FileDataset(folder, _read_png16 if kind == "gray16" else np.load, transform)


def _loaders(name: str, folder: str, store: str, size: int, threads: int,
             batch_size: int, host_workers: int = 0) -> dict[str, Callable[[], Any]]:
    """Each loader of the list, to build (so one that fails to build is left out alone); with
    ``host_workers``, also the DALI backend with its host stage in that many processes."""
    common = {"batch_size": batch_size, "shuffle": True, "drop_last": True}
    extra = {"output_dtype": "uint8", "layout": "NCHW"} if name == "uint8" else {}
    augment = fastload_ops(name, size)

    def torchvision() -> Any:
        return torch.utils.data.DataLoader(
            torchvision_dataset(name, folder, size), num_workers=threads, persistent_workers=True,
            generator=torch.Generator().manual_seed(0), **common)

    def fastload_loader(backend: str, processes: int = 0) -> Callable[[], Any]:
        return lambda: fastload.Loader(store, augment=augment, backend=backend, device="cpu",
                                       num_threads=threads, seed=0, host_workers=processes, **common, **extra)

    loaders = {"torchvision": torchvision, "fastload dali": fastload_loader("dali"),
               "fastload torch": fastload_loader("torch")}
    if host_workers:
        loaders[HOST_PROCESSES] = fastload_loader("dali", host_workers)
    return loaders


HOST_PROCESSES = "fastload dali host_workers"


def measure(data: Mapping[str, BenchData], *, lists: list[str], size: int, threads: int, batch_size: int,
            rounds: int, batches: int, settle: float = 1.0, host_workers: int = 0) -> dict[str, dict[str, Any]]:
    """Per list and loader: median img/s over the rounds, the median of each round's ratio to
    torchvision (with its range; None where torchvision failed), and its batches' shape and dtype.

    ``data`` maps each data kind the lists need (``DATA_KINDS``) to its folder and LMDB store.
    Each turn first takes, untimed, the batches a loader made while the others ran: a DataLoader
    keeps 2 (``prefetch_factor``) per worker in flight, so ``2 x threads`` (with 2 of them, 2 of a
    turn's 8 timed batches were made beforehand, a bias that grew with how far a loader prefetches:
    up to an epoch's end for a DataLoader, on through it for fastload's torch backend).
    A loader that fails to build or to give its first batches is printed (``failed, left out``)
    and missing from its list's results.
    """
    streams: dict[tuple[str, str], Iterator] = {}
    outputs: dict[tuple[str, str], str] = {}
    for name in lists:
        kind = data[DATA_KINDS[name]]
        for loader, build in _loaders(name, kind.folder, kind.stores[STORES[name]], size, threads,
                                      batch_size, host_workers).items():
            made = None
            try:
                made = build()
                streams[(name, loader)] = endless_batches(made)
                for _ in range(3):  # start workers, build pipelines
                    images, _ = next(streams[(name, loader)])
                outputs[(name, loader)] = _describe_batch(images)
            except Exception as exc:  # report the loader, measure the others
                print(f"{name}/{loader}: failed, left out: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                streams.pop((name, loader), None)
                if hasattr(made, "close"):
                    made.close()
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in streams}
    keys = list(streams)
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            m = timed_round(streams[key], batches, flush=2 * threads, settle=settle)
            rates[key].append(m["images"] / m["seconds"])
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n}/{who} {rates[(n, who)][-1]:.0f}" for n, who in keys),
              flush=True)
    out: dict[str, dict[str, Any]] = {name: {} for name in lists}
    for name, loader in keys:
        row = {"images_per_s": statistics.median(rates[(name, loader)]), "rounds": rates[(name, loader)],
               "ratio": None, "ratio_min": None, "ratio_max": None, "output": outputs[(name, loader)]}
        if (name, "torchvision") in rates:
            ratios = [a / b for a, b in zip(rates[(name, loader)], rates[(name, "torchvision")])]
            row.update(ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
        out[name][loader] = row
    return out


def _describe_batch(images: Any) -> str:
    """A batch's shape and dtype ("8x3x32x32 float32"): every loader of a list must give the same."""
    return f"{'x'.join(map(str, images.shape))} {str(images.dtype).removeprefix('torch.')}"


def table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table: one row per list, "failed" where a loader was left out."""
    loaders = ["fastload dali", "fastload torch"]
    head = "| op list | torchvision baseline | torchvision img/s | fastload DALI | ratio (range) | fastload torch | ratio (range) |"
    if any(HOST_PROCESSES in by for by in results.values()):  # the --host-workers column
        loaders.append(HOST_PROCESSES)
        head += " DALI, host_workers | ratio (range) |"
    lines = [head, "|---" * (3 + 2 * len(loaders)) + "|"]
    for name, by in results.items():
        tv = by.get("torchvision")
        cells = [BASELINES[DATA_KINDS[name]], f"{tv['images_per_s']:.0f}" if tv else "failed"]
        for loader in loaders:
            r = by.get(loader)
            if r is None:
                cells += ["failed", "-"]
                continue
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})"
            cells += [f"{r['images_per_s']:.0f}", ratio]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prepare(kind: str, work: str, images: int, folder: str | None = None) -> BenchData:
    """Generate (or reuse) and pack one data kind under ``work``: ``images`` samples in 10
    classes (``folder``: the user's photos instead)."""
    per_class = max(1, images // 10)
    if kind == "photos":
        return prepare_data(work, folder=folder, spec=sample_spec(10, per_class), formats=("lmdb",))
    if kind == "gray16":
        spec = replace(sample_spec(10, per_class, short_side=(448, 576)), image_format="png16")
        return prepare_data(work, spec=spec, formats=("lmdb", "lmdb-raw"))
    if kind == "ch6":
        return prepare_data(work, spec=ArraySpec(10, per_class, side=512, channels=6), formats=("lmdb", "lmdb-raw"))
    if kind == "float32":
        return prepare_data(work, spec=ArraySpec(10, per_class, side=512, channels=3, dtype="float32"), formats=("lmdb",))
    raise ValueError(f"unknown data kind {kind!r}; known: {', '.join(BASELINES)}")


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="bench-data", help="generated photos and store (reused)")
    p.add_argument("--data", help="an ImageFolder tree to use instead of generated photos")
    p.add_argument("--images", type=int, default=1000, help="generated photos (10 classes)")
    p.add_argument("--other-images", type=int, help="generated gray16 PNGs, ch6 and float32 arrays, each "
                   "(10 classes; default: --images, at most 200)")
    p.add_argument("--lists", default=",".join(LISTS), help=f"comma-separated subset of {', '.join(LISTS)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=8, help="timed batches per loader per round")
    p.add_argument("--settle", type=float, default=1.0, help="seconds after each turn for prefetching to end")
    p.add_argument("--host-workers", type=int, default=0,
                   help="also the DALI backend with its host stage in this many processes (a column more)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    lists = [n.strip() for n in args.lists.split(",") if n.strip()]
    unknown = [n for n in lists if n not in LISTS]
    if unknown:
        raise SystemExit(f"op_lists.py: unknown lists {unknown}; known: {', '.join(LISTS)}")
    others = args.other_images if args.other_images is not None else min(args.images, 200)
    data = {}
    for kind in dict.fromkeys(DATA_KINDS[n] for n in lists):  # only what the lists need, in order
        data[kind] = prepare(kind, os.path.abspath(args.work), args.images if kind == "photos" else others,
                             folder=args.data)
        print(f"{kind}: {data[kind].description}", flush=True)
    results = measure(data, lists=lists, size=args.image_size, threads=args.threads,
                      batch_size=args.batch_size, rounds=args.rounds, batches=args.batches, settle=args.settle,
                      host_workers=args.host_workers)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results,
                       "baselines": {n: BASELINES[DATA_KINDS[n]] for n in lists},
                       "data": {kind: d.description for kind, d in data.items()}}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
