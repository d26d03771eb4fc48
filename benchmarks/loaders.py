"""One adapter per loader compared. Every adapter does the same work, the train preset:

random-resized-crop to ``image_size`` (scale 0.08-1, ratio 3/4-4/3), horizontal flip with
p=0.5, normalize with the ImageNet mean/std, float32 NCHW batches, int64 labels, shuffled,
last partial batch dropped.

An adapter is a function ``build(data, config) -> iterable`` registered with ``@register``;
iterating the result runs one epoch of ``(images, labels)`` batches, and ``set_epoch(e)`` is
called between epochs when the object has it. Heavy imports (torchvision, DALI, fastload's
Loader) happen inside the adapters, so listing loaders costs nothing and a missing one gives a
"... not installed" row instead of an error.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import IMAGENET_MEAN, IMAGENET_STD, BenchConfig, BenchData

__all__ = ["LOADERS", "LoaderSpec", "SYNTHETIC", "SyntheticBatches", "default_loaders",
           "list_image_folder", "random_resized_crop_box", "register"]

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class LoaderSpec:
    """A registered loader: how to build it and what it needs.

    Attributes:
        name: the registry key, used on the command line and in the results.
        build: ``build(data, config)`` -> an iterable of ``(images, labels)`` batches per epoch.
        source: what it reads: "folder" (the raw files), "lmdb" or "hdf5" (a packed store).
        device: where its batches end up: "cpu" or "cuda".
        family: which implementation, for grouping in plots ("torchvision", "dali", "fastload").
        needs: requirement names checked by ``unavailable`` ("dali", "fastload.Loader", ...).
        description: one line for the report.
        training_only: a reference for ``--train`` (the synthetic data), not a loader to time
            alone; its batches are on the training device, whatever ``device`` says.
        variant: another setting of a loader in the default run (measured when named with
            ``--loaders``, and by ``gpu_check``), not a loader of its own.
    """

    name: str
    build: Callable[[BenchData, BenchConfig], Iterable]
    source: str
    device: str
    family: str
    needs: tuple[str, ...]
    description: str
    training_only: bool = False
    variant: bool = False

    @property
    def optional(self) -> bool:
        """Optional peers are only run where they are installed."""
        return self.family == "webdataset"

    def unavailable(self, data: BenchData | None = None) -> str | None:
        """Why this loader cannot run here, or None when it can."""
        for need in self.needs:
            reason = _REQUIREMENTS[need]()
            if reason:
                return reason
        if data is not None and self.source not in ("folder", "memory") and self.source not in data.stores:
            return f"no {self.source} store was packed"
        return None


LOADERS: dict[str, LoaderSpec] = {}


def register(name: str, *, source: str, device: str = "cpu", family: str,
             needs: tuple[str, ...] = (), description: str, training_only: bool = False,
             variant: bool = False) -> Callable:
    """Register ``build`` under ``name`` (the FFCV-benchmark style of a suite registry)."""
    def wrap(build: Callable[[BenchData, BenchConfig], Iterable]) -> Callable:
        needs_all = needs + (("cuda",) if device == "cuda" else ())
        LOADERS[name] = LoaderSpec(name, build, source, device, family, needs_all, description,
                                   training_only, variant)
        return build
    return wrap


def default_loaders() -> list[str]:
    """Every CPU loader; GPU loaders where CUDA is present; optional peers where installed
    (not the synthetic reference of ``--train``, which the suite adds itself, nor variants)."""
    names = []
    for spec in LOADERS.values():
        if spec.training_only or spec.variant:
            continue
        if spec.device == "cuda" and _no_cuda():
            continue
        if spec.optional and spec.unavailable():
            continue
        names.append(spec.name)
    return names


# --- requirements -------------------------------------------------------------------------


def _module(name: str, label: str | None = None) -> Callable[[], str | None]:
    def check() -> str | None:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        return None if found else f"{label or name} not installed"
    return check


def _no_fastload_loader() -> str | None:
    import fastload

    if hasattr(fastload, "Loader"):
        return None
    return "not available: fastload.Loader does not exist in this checkout yet"


def _no_fastload_dali() -> str | None:
    if _no_fastload_loader():
        return _no_fastload_loader()
    if importlib.util.find_spec("fastload.backends.dali.backend") is None:
        return "not available: fastload's dali backend does not exist in this checkout yet"
    return None


def _no_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device"


_REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "torchvision": _module("torchvision"),
    "dali": _module("nvidia.dali", "dali"),
    "fastload.Loader": _no_fastload_loader,
    "fastload.dali": _no_fastload_dali,
    "cuda": _no_cuda,
    "webdataset": _module("webdataset"),
}


# --- shared pieces ------------------------------------------------------------------------


def random_resized_crop_box(rng: np.random.Generator, height: int, width: int,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) drawn exactly as torchvision's ``RandomResizedCrop.get_params``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height  # fallback: the central crop of the nearest allowed ratio
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def list_image_folder(folder: str) -> tuple[list[str], list[int]]:
    """Files of an ImageFolder tree and their labels (sorted class folders' indices)."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        for root, _, files in sorted(os.walk(os.path.join(folder, name))):
            for f in sorted(files):
                paths.append(os.path.join(root, f))
                labels.append(label)
    return paths, labels


def _torchvision_train_transform(image_size: int) -> Any:
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _dataloader(dataset: Any, config: BenchConfig, **kwargs: Any) -> Any:
    """A DataLoader set up as a careful user would: persistent workers (so the small sample
    set's frequent epoch ends do not re-fork workers, which real ImageNet epochs amortize)."""
    import torch

    return torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
        num_workers=config.threads, persistent_workers=True, pin_memory=_pin(config),
        generator=torch.Generator().manual_seed(config.seed), **kwargs)


def _pin(config: BenchConfig) -> bool:
    """Pinned batches when they feed a GPU model, as a training script on a GPU would ask."""
    return config.train_model is not None and config.train_device == "cuda"


# --- synthetic: the data-free reference of --train ----------------------------------------


class SyntheticBatches:
    """One batch made once on the training device and handed out again and again: the
    model's speed with no loader at all (what ``--train`` compares every loader with).

    The same float32 NCHW images and int64 labels as the loaders give, epochs of the same
    length as theirs, so the training step does the same work on both.
    """

    def __init__(self, data: BenchData, config: BenchConfig) -> None:
        import torch

        generator = torch.Generator().manual_seed(config.seed)
        images = torch.randn(config.batch_size, 3, config.image_size, config.image_size,
                             generator=generator)
        labels = torch.randint(0, max(data.classes, 1), (config.batch_size,), generator=generator)
        self.batch = (images.to(config.train_device), labels.to(config.train_device))
        self.batches = max(1, data.count // config.batch_size)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for _ in range(self.batches):
            yield self.batch


@register(SYNTHETIC, source="memory", family="synthetic", training_only=True,
          description="--train only: one random batch already on the training device, reused "
                      "(the model's data-free speed)")
def build_synthetic(data: BenchData, config: BenchConfig) -> Iterable:
    return SyntheticBatches(data, config)


# --- torchvision: the baseline ------------------------------------------------------------


@register("torchvision", source="folder", family="torchvision", needs=("torchvision",),
          description="torchvision ImageFolder (PIL decode) + standard transforms + DataLoader")
def build_torchvision(data: BenchData, config: BenchConfig) -> Iterable:
    from torchvision import datasets

    transform = _torchvision_train_transform(config.image_size)
    return _dataloader(datasets.ImageFolder(data.folder, transform), config)


# --- raw files with OpenCV decode in a DataLoader -----------------------------------------


class OpenCVFolder:
    """Raw JPEG files decoded with OpenCV and augmented with NumPy (module-level: picklable)."""

    def __init__(self, folder: str, image_size: int) -> None:
        self.paths, self.labels = list_image_folder(folder)
        self.image_size = image_size
        self.mean = np.float32(IMAGENET_MEAN) * 255
        self.inv_std = 1 / (np.float32(IMAGENET_STD) * 255)
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def _generator(self) -> np.random.Generator:
        import torch

        if self._rng is None:  # one stream per worker: torch seeds each worker differently
            self._rng = np.random.default_rng(torch.initial_seed())
        return self._rng

    def __getitem__(self, index: int) -> tuple[Any, int]:
        import cv2
        import torch

        rng = self._generator()
        bgr = cv2.imdecode(np.fromfile(self.paths[index], np.uint8), cv2.IMREAD_COLOR)
        top, left, h, w = random_resized_crop_box(rng, *bgr.shape[:2])
        crop = cv2.resize(bgr[top:top + h, left:left + w], (self.image_size,) * 2,
                          interpolation=cv2.INTER_LINEAR)
        rgb = crop[:, ::-1, ::-1] if rng.random() < 0.5 else crop[:, :, ::-1]  # flip, BGR->RGB
        chw = ((rgb.astype(np.float32) - self.mean) * self.inv_std).transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(chw)), self.labels[index]


def _single_threaded_opencv(_worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # the DataLoader's workers are the parallelism


@register("opencv-folder", source="folder", family="opencv",
          description="raw files, cv2.imdecode + NumPy augmentation, DataLoader workers")
def build_opencv_folder(data: BenchData, config: BenchConfig) -> Iterable:
    return _dataloader(OpenCVFolder(data.folder, config.image_size), config,
                       worker_init_fn=_single_threaded_opencv)


# --- DALI's own file reader ---------------------------------------------------------------


class DaliBatches:
    """DALI's PyTorch iterator as ``(images, int64 labels)`` batches, one epoch per ``iter``."""

    def __init__(self, pipe: Any) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        self._it = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                                       last_batch_policy=LastBatchPolicy.DROP, auto_reset=True)

    def __len__(self) -> int:
        return len(self._it)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for out in self._it:
            yield out[0]["images"], out[0]["labels"].reshape(-1).long()


def _dali_file_pipeline(data: BenchData, config: BenchConfig, gpu: bool) -> Any:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def
    def pipeline() -> Any:
        jpegs, labels = fn.readers.file(file_root=data.folder, random_shuffle=True,
                                        name="Reader", seed=config.seed)
        images = fn.decoders.image_random_crop(
            jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB,
            random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3])
        images = fn.resize(images, resize_x=config.image_size, resize_y=config.image_size)
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW",
            mean=[m * 255 for m in IMAGENET_MEAN], std=[s * 255 for s in IMAGENET_STD],
            mirror=fn.random.coin_flip(probability=0.5))
        return images, labels

    pipe = pipeline(batch_size=config.batch_size, num_threads=config.threads,
                    device_id=0 if gpu else None, seed=config.seed)
    pipe.build()
    return pipe


@register("dali-file", source="folder", family="dali", needs=("dali",),
          description="DALI fn.readers.file + decoders.image_random_crop + resize + "
                      "crop_mirror_normalize, CPU mode (device_id=None)")
def build_dali_file(data: BenchData, config: BenchConfig) -> Iterable:
    return DaliBatches(_dali_file_pipeline(data, config, gpu=False))


@register("dali-file-gpu", source="folder", device="cuda", family="dali", needs=("dali",),
          description="the same DALI pipeline with nvJPEG (decoders device='mixed') on GPU 0")
def build_dali_file_gpu(data: BenchData, config: BenchConfig) -> Iterable:
    return DaliBatches(_dali_file_pipeline(data, config, gpu=True))


# --- WebDataset (optional peer: only where installed) -------------------------------------


@register("webdataset", source="webdataset", family="webdataset", needs=("webdataset", "torchvision"),
          description="WebDataset tar shards (shuffled at write), PIL decode + torchvision "
                      "transforms, batched in WebLoader workers (short batches at shard ends)")
def build_webdataset(data: BenchData, config: BenchConfig) -> Iterable:
    import torch
    import webdataset as wds

    folder = data.stores["webdataset"]
    urls = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".tar"))
    transform = _torchvision_train_transform(config.image_size)
    dataset = (wds.WebDataset(urls, shardshuffle=len(urls), detshuffle=True, seed=config.seed,
                              empty_check=False)
               .shuffle(1000).decode("pil").to_tuple("jpg", "cls").map_tuple(transform, int)
               # partial: each worker's last short batch is delivered (and counted), not
               # decoded and thrown away, which on a small sample set would waste much work.
               .batched(config.batch_size, collation_fn=torch.utils.data.default_collate,
                        partial=True))
    return wds.WebLoader(dataset, batch_size=None, num_workers=config.threads,
                         persistent_workers=True, pin_memory=_pin(config))


# --- fastload -----------------------------------------------------------------------------


def _fastload(data: BenchData, config: BenchConfig, fmt: str, backend: str, device: str,
              host_workers: int = 0) -> Any:
    import fastload

    # Pinned batches where a CPU loader feeds a GPU model, as for the DataLoaders.
    pinned = {"pin_memory": True} if _pin(config) and device == "cpu" else {}
    return fastload.Loader(
        data.stores[fmt], batch_size=config.batch_size, augment="train",
        image_size=config.image_size, shuffle=True, seed=config.seed, drop_last=True,
        backend=backend, device=device, num_threads=config.threads, host_workers=host_workers, **pinned)


def _register_fastload(fmt: str, backend: str, device: str) -> None:
    name = f"fastload-{backend}-{fmt}" + ("-gpu" if device == "cuda" else "")
    needs = ("fastload.Loader",) + (("dali", "fastload.dali") if backend == "dali" else ())
    where = "GPU" if device == "cuda" else "CPU"

    def build(data: BenchData, config: BenchConfig) -> Iterable:
        return _fastload(data, config, fmt, backend, device)

    register(name, source=fmt, device=device, family=f"fastload-{backend}", needs=needs,
             description=f"fastload.Loader(backend={backend!r}) on the {fmt} store, {where}")(build)


for _backend, _device in (("torch", "cpu"), ("dali", "cpu"), ("dali", "cuda")):
    for _fmt in ("lmdb", "hdf5"):
        _register_fastload(_fmt, _backend, _device)
    # decoded-pixel store: the same crop, resize and normalize, no decode (on the CPU both backends:
    # DALI has nothing to decode there, and which backend serves such a store best is measured)
    if _backend == "dali" or _device == "cpu":
        _register_fastload("lmdb-raw", _backend, _device)


@register("fastload-dali-lmdb-procs", source="lmdb", family="fastload-dali", needs=("fastload.Loader", "dali", "fastload.dali"),
          description="fastload.Loader(backend='dali', host_workers=threads) on the lmdb store, CPU: the host "
                      "stage's ops in processes", variant=True)
def _fastload_host_processes(data: BenchData, config: BenchConfig) -> Iterable:
    return _fastload(data, config, "lmdb", "dali", "cpu", host_workers=config.threads)
