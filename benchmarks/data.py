"""The benchmark's data: a generated ImageNet-like sample set (or the user's folder), its LMDB
and HDF5 stores with their pack time and size, and the JPEG decode ceiling of this machine.
Also generated 16-bit grayscale PNGs (``SampleSpec(image_format="png16")``) and microscopy-like
multi-channel ``.npy`` arrays (``ArraySpec``), for the op lists of those kinds of data.

Generated data and stores are cached under the work folder and reused when the spec matches,
so repeated runs measure loaders, not data generation.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

import fastload

from .config import BenchData

__all__ = ["ArraySpec", "decode_ceiling", "folder_stats", "make_array_folder", "prepare_data",
           "prepare_data_isolated", "sample_spec", "write_tar_shards", "disk_bytes"]

FORMATS = {"lmdb": ".lmdb", "hdf5": ".h5", "lmdb-raw": "-raw.lmdb"}
# fmt -> (store format, payload): "lmdb-raw" holds decoded pixels (no JPEG decode when reading).
PACKINGS = {"lmdb": ("lmdb", "encoded"), "hdf5": ("hdf5", "encoded"), "lmdb-raw": ("lmdb", "raw")}


def sample_spec(num_classes: int, per_class: int, short_side: tuple[int, int] = (300, 500),
                seed: int = 0) -> fastload.SampleSpec:
    """The ImageNet-like spec: short side 300-500 px, 4:3 to 3:2, JPEG quality 90."""
    return fastload.SampleSpec(num_classes=num_classes, per_class=per_class,
                               short_side=short_side, quality=90, seed=seed)


@dataclass(frozen=True)
class ArraySpec:
    """Microscopy-like multi-channel samples to generate: ``side`` x ``side`` px, ``channels``
    channels, saved channels-first (CxHxW) as ``.npy`` files of ``dtype`` in class sub-folders."""

    num_classes: int = 10
    per_class: int = 20
    side: int = 512
    channels: int = 6
    dtype: str = "uint16"
    seed: int = 0


def synthesize_cells(rng: Any, label: int, spec: ArraySpec) -> Any:
    """One CxHxW sample like a multi-stain fluorescence image: cells (a bright compact nucleus
    channel, wider dimmer cytoplasm and organelle channels, each cell stained in a random subset
    of the other channels) on an uneven smooth background, with shot-like noise. The cell count
    and size depend on ``label``, so classes differ."""
    import cv2
    import numpy as np

    side, c = spec.side, spec.channels
    out = np.empty((c, side, side), np.float32)
    background = cv2.resize(rng.random((4, 4), dtype=np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    cells = int(rng.integers(8, 16)) + 2 * label
    radius = max(2.0, side / 40 * (1 + 0.15 * (label % 4)))
    centres = rng.random((cells, 2)) * side
    stained = rng.random((cells, c)) < 0.6
    stained[:, 0] = True  # every cell has a nucleus
    for ch in range(c):
        canvas = np.zeros((side, side), np.float32)
        grow = 1.0 if ch == 0 else 1.8 + 0.3 * ch
        for (x, y), on in zip(centres, stained[:, ch]):
            if on:
                r = max(1, int(radius * grow * rng.uniform(0.7, 1.3)))
                cv2.circle(canvas, (int(x), int(y)), r, float(rng.uniform(0.5, 1.0)), -1, cv2.LINE_AA)
        blur = max(1.0, radius * grow / 3)
        canvas = cv2.GaussianBlur(canvas, (0, 0), blur)
        signal = 0.05 + 0.1 * background + (0.8 if ch == 0 else 0.5) * canvas
        out[ch] = signal + rng.normal(0, 0.01, (side, side)).astype(np.float32) * np.sqrt(signal + 0.1)
    if np.dtype(spec.dtype).kind == "f":  # float pixels in 0..1
        return np.clip(out, 0, 1).astype(spec.dtype)
    top = np.iinfo(spec.dtype).max
    return np.clip(out * top, 0, top).astype(spec.dtype)


def make_array_folder(root: str, spec: ArraySpec) -> list[str]:
    """Write ``spec.num_classes`` class folders of ``spec.per_class`` ``.npy`` samples under
    ``root`` (deterministic for a given spec). Returns the written paths."""
    import numpy as np

    paths = []
    for label in range(spec.num_classes):
        folder = os.path.join(root, f"class_{label:03d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(spec.per_class):
            path = os.path.join(folder, f"cells_{i:05d}.npy")
            np.save(path, synthesize_cells(np.random.default_rng([spec.seed, label, i]), label, spec))
            paths.append(path)
    return paths


def folder_stats(folder: str) -> tuple[int, int, int]:
    """(images, classes, total bytes) of an ImageFolder tree."""
    count = total = 0
    classes = [e.path for e in os.scandir(folder) if e.is_dir()]
    for class_dir in classes:
        for root, _, files in os.walk(class_dir):
            for name in files:
                count += 1
                total += os.path.getsize(os.path.join(root, name))
    return count, len(classes), total


def _describe(spec: fastload.SampleSpec | ArraySpec | None, count: int, classes: int, total: int) -> str:
    size = f"{count} images in {classes} classes, {total / 1e6:.1f} MB, {total / max(count, 1) / 1e3:.0f} KB each"
    if spec is None:
        return f"user folder: {size}"
    if isinstance(spec, ArraySpec):
        return (f"generated microscopy-like arrays (benchmarks.data.make_array_folder: {spec.channels} "
                f"channels of cells on a smooth background with noise, {spec.side}x{spec.side} px, "
                f"{spec.dtype}, .npy CxHxW): {size}")
    if spec.image_format == "png16":
        return (f"generated 16-bit grayscale PNGs (fastload.make_sample_folder, image_format png16: the "
                f"photos' luminance x 257; short side {spec.short_side[0]}-{spec.short_side[1]} px): {size}")
    return (f"generated ImageNet-like JPEGs (fastload.make_sample_folder: 1/f texture, lit "
            f"gradients, blurred objects, grain; short side {spec.short_side[0]}-"
            f"{spec.short_side[1]} px, aspect 4:3-3:2, quality {spec.quality}): {size}")


def _folder_name(spec: fastload.SampleSpec | ArraySpec) -> str:
    """The generated folder's name; JPEG sets keep the name they always had (stores reused)."""
    if isinstance(spec, ArraySpec):  # uint16 sets keep their names; other types are named
        kind = "" if spec.dtype == "uint16" else f"-{spec.dtype}"
        return f"arrays-{spec.num_classes}x{spec.per_class}-{spec.channels}ch{kind}"
    suffix = "" if spec.image_format == "jpeg" else f"-{spec.image_format}"
    return f"sample-{spec.num_classes}x{spec.per_class}{suffix}"


def _generate(folder: str, spec: fastload.SampleSpec | ArraySpec) -> None:
    marker = folder + ".spec.json"  # beside the folder: inside, it would be packed as an input
    wanted = json.dumps(asdict(spec), sort_keys=True)
    if os.path.exists(marker) and open(marker).read() == wanted:
        return
    shutil.rmtree(folder, ignore_errors=True)
    print(f"generating {spec.num_classes * spec.per_class} sample images in {folder} ...", flush=True)
    if isinstance(spec, ArraySpec):
        make_array_folder(folder, spec)
    else:
        fastload.make_sample_folder(folder, spec)
    with open(marker, "w") as f:
        f.write(wanted)


def _pack(folder: str, target: str, fmt: str, total_bytes: int) -> dict[str, float]:
    """Pack (or reuse) one store; the pack figures are cached beside it."""
    stats_path = target + ".bench.json"
    if os.path.exists(target) and os.path.exists(stats_path) and \
            os.path.getmtime(stats_path) >= os.path.getmtime(folder):
        with open(stats_path) as f:
            return {**json.load(f), "store_bytes": disk_bytes(target)}
    print(f"packing {folder} -> {target} ...", flush=True)
    start = time.perf_counter()
    store_format, payload = PACKINGS[fmt]
    summary = fastload.pack(folder, target, options=fastload.PackOptions(
        format=store_format, payload=payload, overwrite=True, progress=False))
    seconds = time.perf_counter() - start
    stats = {"seconds": seconds, "payload_bytes": summary.bytes_out, "input_bytes": total_bytes,
             "images": summary.packed, "skipped": len(summary.skipped),
             "images_per_s": summary.packed / seconds}
    with open(stats_path, "w") as f:
        json.dump(stats, f)
    return {**stats, "store_bytes": disk_bytes(target)}


def disk_bytes(path: str) -> int:
    """Bytes allocated on disk for a file or a directory tree (an LMDB may be either)."""
    if not os.path.isdir(path):
        return os.stat(path).st_blocks * 512
    return sum(os.stat(os.path.join(root, f)).st_blocks * 512
               for root, _, files in os.walk(path) for f in files)


def write_tar_shards(folder: str, target: str, num_shards: int = 16, seed: int = 0) -> dict[str, float]:
    """WebDataset shards of the folder: ``{key}.jpg`` + ``{key}.cls``, shuffled at write time
    (as WebDataset advises), ``num_shards`` tar files so up to that many workers get one."""
    import tarfile

    import numpy as np

    from .loaders import list_image_folder

    stats_path = target + ".bench.json"
    if os.path.exists(stats_path) and os.path.getmtime(stats_path) >= os.path.getmtime(folder):
        with open(stats_path) as f:
            return json.load(f)
    paths, labels = list_image_folder(folder)
    order = np.random.default_rng(seed).permutation(len(paths))
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    start = time.perf_counter()
    for shard, indices in enumerate(np.array_split(order, num_shards)):
        with tarfile.open(os.path.join(target, f"shard-{shard:05d}.tar"), "w") as tar:
            for i in indices:
                tar.add(paths[i], arcname=f"{i:08d}.jpg")
                label = str(labels[i]).encode()
                info = tarfile.TarInfo(f"{i:08d}.cls")
                info.size = len(label)
                tar.addfile(info, io.BytesIO(label))
    seconds = time.perf_counter() - start
    stats = {"seconds": seconds, "store_bytes": disk_bytes(target), "images": len(paths),
             "images_per_s": len(paths) / seconds, "shards": num_shards}
    with open(stats_path, "w") as f:
        json.dump(stats, f)
    return stats


def prepare_data(work: str, *, folder: str | None = None, spec: fastload.SampleSpec | ArraySpec | None = None,
                 formats: tuple[str, ...] = ("lmdb", "hdf5", "lmdb-raw"), webdataset: bool = False) -> BenchData:
    """Generate (unless ``folder`` is given) and pack the benchmark data under ``work``.

    Args:
        work: where generated images and stores go.
        folder: the user's ImageFolder tree; None generates one from ``spec``.
        spec: the sample set to generate (default: 10 classes x 200 images); an ``ArraySpec``
            generates multi-channel ``.npy`` samples.
        formats: stores to pack ("lmdb", "hdf5", "lmdb-raw": decoded pixels).
        webdataset: also write WebDataset tar shards (for the optional WebDataset peer).
    """
    os.makedirs(work, exist_ok=True)
    if folder is None:
        spec = spec or sample_spec(10, 200)
        folder = os.path.join(work, _folder_name(spec))
        _generate(folder, spec)
        name = os.path.basename(folder)
    else:
        spec = None
        name = os.path.basename(os.path.normpath(folder))
    folder = os.path.abspath(folder)
    count, classes, total = folder_stats(folder)
    stores, pack = {}, {}
    for fmt in formats:
        target = os.path.abspath(os.path.join(work, name + FORMATS[fmt]))
        pack[fmt] = _pack(folder, target, fmt, total)
        stores[fmt] = target
    if webdataset:
        stores["webdataset"] = os.path.abspath(os.path.join(work, name + "-wds"))
        pack["webdataset"] = write_tar_shards(folder, stores["webdataset"])
    return BenchData(folder=folder, stores=stores, count=count, classes=classes,
                     total_bytes=total, description=_describe(spec, count, classes, total),
                     pack=pack)


def prepare_data_isolated(work: str, *, spec: fastload.SampleSpec,
                          formats: tuple[str, ...] = ("lmdb", "hdf5", "lmdb-raw"),
                          timeout_s: float = 600.0) -> BenchData:
    """``prepare_data`` of a generated set in a fresh subprocess (``python -m benchmarks.data``),
    killed with its pack workers after ``timeout_s``: a stuck pack cannot stall the caller.

    Raises:
        RuntimeError: the preparation failed or ran out of time (the message says which).
    """
    from .suite import run_module

    argument = json.dumps({"work": work, "spec": asdict(spec), "formats": list(formats)})
    result = run_module("benchmarks.data", argument, timeout_s)
    if result.get("status") == "error":
        raise RuntimeError(f"preparing the benchmark data in {work} failed: {result['note']}")
    return BenchData.from_json(result)


def _main(argv: list[str]) -> None:
    args = json.loads(argv[0])
    spec = fastload.SampleSpec(**{**args["spec"], "short_side": tuple(args["spec"]["short_side"])})
    data = prepare_data(args["work"], spec=spec, formats=tuple(args["formats"]))
    with open(argv[1], "w") as f:
        json.dump(data.to_json(), f)


def _image_files(folder: str, limit: int) -> list[str]:
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        paths += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
    return paths[:limit]


def decode_ceiling(folder: str, cores: int, *, limit: int = 500, min_seconds: float = 2.0) -> dict[str, Any]:
    """Single-core JPEG decode rate (``cv2.imdecode``, files already in memory) times the cores.

    No loader can decode full images faster than this; one that decodes only the crop it needs
    (DALI's ``image_random_crop``) can come near it or, for small crops, beyond it.
    """
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    buffers = [np.fromfile(p, np.uint8) for p in _image_files(folder, limit)]
    decoded, start = 0, time.perf_counter()
    while decoded == 0 or time.perf_counter() - start < min_seconds:
        for buf in buffers:
            cv2.imdecode(buf, cv2.IMREAD_COLOR)
        decoded += len(buffers)
    per_core = decoded / (time.perf_counter() - start)
    return {"decode_per_core_images_per_s": per_core, "cores": cores,
            "ceiling_images_per_s": per_core * cores, "images_sampled": len(buffers),
            "method": "cv2.imdecode(IMREAD_COLOR), one thread, encoded files in memory"}


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
