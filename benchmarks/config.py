"""The two values every benchmark run is described by: what data, and which configuration.

Both are frozen dataclasses that round-trip through JSON, because each configuration is
measured in a fresh subprocess that receives them on its command line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["BenchConfig", "BenchData", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BenchData:
    """The sample set and its packed stores (paths absolute).

    Attributes:
        folder: the raw ImageFolder tree (class sub-folders of JPEGs).
        stores: format name ("lmdb", "hdf5") to the packed store's path.
        count: images in the folder.
        classes: class sub-folders.
        total_bytes: the encoded files' total size (what every loader must read per epoch).
        description: one line saying what the images are.
        pack: per format, {"seconds": ..., "store_bytes": ..., "images_per_s": ...}.
    """

    folder: str
    stores: dict[str, str]
    count: int
    classes: int
    total_bytes: int
    description: str = ""
    pack: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def mean_bytes(self) -> float:
        return self.total_bytes / self.count if self.count else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BenchData:
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


@dataclass(frozen=True)
class BenchConfig:
    """One point of the grid: a loader with its threads and batch size, and how to time it.

    Attributes:
        loader: a name registered in ``benchmarks.loaders``.
        threads: worker processes (DataLoader) or threads (DALI, fastload) for the loader.
        batch_size: images per batch.
        image_size: output side (the train preset: random-resized-crop to this).
        warmup_batches: batches drawn (after the first) before timing starts.
        batches_per_round: batches per timed round.
        rounds: timed rounds; the report gives their median and spread.
        seed: shuffling and augmentation seed.
        train_model: a torchvision model name: every batch after the first feeds a training
            step of it (``fastload.training.TrainingStep``) and the rates are training images/s.
            None measures the loader alone.
        train_device: where the model trains ("cuda" or "cpu"; batches are moved there).
        gil_seconds: after the timed rounds, sample the GIL with py-spy for this long while
            drawing batches (``benchmarks.gil``); 0 skips it.
        host_margin: the CPU host stage's thread-share margin for this row
            (``fastload.backends.dali.share.MARGIN``): a large value gives every batch all the
            host threads, as before the share was measured; set, it also leaves DALI's threads at
            the process's priority (``share.DALI_NICE`` 0): the host stage as it was before it
            shared the CPU. None keeps the library's.
    """

    loader: str
    threads: int
    batch_size: int
    image_size: int = 224
    warmup_batches: int = 5
    batches_per_round: int = 20
    rounds: int = 5
    seed: int = 0
    train_model: str | None = None
    train_device: str = "cpu"
    gil_seconds: float = 0.0
    host_margin: float | None = None

    def __post_init__(self) -> None:
        for name in ("threads", "batch_size", "image_size", "batches_per_round", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_batches < 0:
            raise ValueError(f"warmup_batches must be >= 0, got {self.warmup_batches}")
        if self.train_device not in ("cpu", "cuda"):
            raise ValueError(f"train_device must be 'cpu' or 'cuda', got {self.train_device!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BenchConfig:
        return cls(**raw)

    def label(self) -> str:
        train = f" training {self.train_model} on {self.train_device}" if self.train_model else ""
        margin = f" host margin {self.host_margin:g}" if self.host_margin is not None else ""
        return f"{self.loader} threads={self.threads} batch={self.batch_size}{train}{margin}"


def dumps(config: BenchConfig, data: BenchData) -> str:
    """The subprocess's command-line argument."""
    return json.dumps({"config": config.to_json(), "data": data.to_json()})


def loads(raw: str) -> tuple[BenchConfig, BenchData]:
    obj = json.loads(raw)
    return BenchConfig.from_json(obj["config"]), BenchData.from_json(obj["data"])
