"""Write a small ImageNet-like sample folder: natural-image-like JPEGs in class sub-folders.

The images are not noise: smooth illumination, a 1/f ("pink") texture like natural scenes,
a few blurred objects with edges, and mild sensor grain. At quality 90 they compress to about
the same bytes per pixel as ImageNet photos, so decode costs are like real data. Each class
has its own palette and object shape, so a small model can learn them (the examples train on it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from .workers import default_workers, ordered_map

__all__ = ["SampleSpec", "make_sample_folder", "synthesize_image"]


@dataclass(frozen=True)
class SampleSpec:
    """What to generate. Short sides are drawn in ``short_side``, aspect ratios in 4:3..3:2."""

    num_classes: int = 10
    per_class: int = 40
    short_side: tuple[int, int] = (300, 500)
    quality: int = 90
    seed: int = 0
    image_format: str = "jpeg"  # "jpeg", "png" or "png16" (16-bit grayscale, like X-rays)

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.per_class < 1:
            raise ValueError("num_classes and per_class must be at least 1")
        if not 16 <= self.short_side[0] <= self.short_side[1]:
            raise ValueError(f"short_side must be an increasing pair >= 16, got {self.short_side}")
        if self.image_format not in ("jpeg", "png", "png16"):
            raise ValueError(f"image_format must be jpeg, png or png16, got {self.image_format!r}")


def _pink_noise(rng: np.random.Generator, h: int, w: int, decay: float) -> np.ndarray:
    """Sum of upsampled octaves with amplitude ~ 1/f: the spectrum of natural scenes."""
    field = np.zeros((h, w), np.float32)
    size, amplitude = 4, 1.0
    while size < max(h, w):
        octave = rng.standard_normal((size, size), dtype=np.float32)
        field += amplitude * cv2.resize(octave, (w, h), interpolation=cv2.INTER_LINEAR)
        size, amplitude = size * 2, amplitude * decay
    return field / (np.abs(field).max() + 1e-6)


def synthesize_image(rng: np.random.Generator, label: int, num_classes: int,
                     height: int, width: int) -> np.ndarray:
    """One natural-image-like RGB uint8 image whose palette and shapes depend on ``label``."""
    hue = 180.0 * label / num_classes
    texture = _pink_noise(rng, height, width, decay=0.8)
    cy = np.cos((np.arange(height, dtype=np.float32) / height - rng.random()) * np.pi)
    cx = np.cos((np.arange(width, dtype=np.float32) / width - rng.random()) * np.pi)
    light = 0.6 + 0.4 * np.outer(cy, cx)
    hsv = np.empty((height, width, 3), np.float32)
    hsv[..., 0] = (hue + 25 * texture + rng.normal(0, 8)) % 180
    hsv[..., 1] = np.clip(120 + 70 * texture, 0, 255)
    hsv[..., 2] = np.clip(255 * light * (0.7 + 0.3 * texture), 0, 255)
    image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    for _ in range(int(rng.integers(2, 6))):
        _draw_object(rng, image, label, hue)
    # Fine detail (foliage, fur, fabric): what makes real photos cost bits to decode.
    detail = rng.standard_normal((height, width, 1), dtype=np.float32) * 9.0
    return np.clip(image + detail, 0, 255).astype(np.uint8)


def _draw_object(rng: np.random.Generator, image: np.ndarray, label: int, hue: float) -> None:
    h, w = image.shape[:2]
    centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    radius = int(rng.integers(min(h, w) // 10, min(h, w) // 3))
    colour_hsv = np.uint8([[[(hue + 90 + rng.normal(0, 10)) % 180, 200, int(rng.integers(60, 250))]]])
    colour = tuple(int(c) for c in cv2.cvtColor(colour_hsv, cv2.COLOR_HSV2RGB)[0, 0])
    overlay = image.copy()
    if label % 3 == 0:
        cv2.circle(overlay, centre, radius, colour, -1, cv2.LINE_AA)
    elif label % 3 == 1:
        cv2.rectangle(overlay, (centre[0] - radius, centre[1] - radius // 2),
                      (centre[0] + radius, centre[1] + radius // 2), colour, -1, cv2.LINE_AA)
    else:
        pts = np.array([[centre[0], centre[1] - radius], [centre[0] - radius, centre[1] + radius],
                        [centre[0] + radius, centre[1] + radius]], np.int32)
        cv2.fillPoly(overlay, [pts], colour, cv2.LINE_AA)
    cv2.addWeighted(overlay, 0.85, image, 0.15, 0, dst=image)


def _size(rng: np.random.Generator, spec: SampleSpec) -> tuple[int, int]:
    short = int(rng.integers(spec.short_side[0], spec.short_side[1] + 1))
    long = int(short * rng.uniform(4 / 3, 3 / 2))
    return (short, long) if rng.random() < 0.75 else (long, short)  # mostly landscape


def _encode(image: np.ndarray, spec: SampleSpec) -> tuple[bytes, str]:
    if spec.image_format == "jpeg":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, spec.quality])
        return buf.tobytes(), ".jpg"
    if spec.image_format == "png16":
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
        ok, buf = cv2.imencode(".png", gray)
        return buf.tobytes(), ".png"
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return buf.tobytes(), ".png"


def _write_chunk(jobs: list[tuple[str, int, int]], spec: SampleSpec) -> list[str]:
    written = []
    for path, label, i in jobs:
        rng = np.random.default_rng([spec.seed, label, i])
        height, width = _size(rng, spec)
        data, ext = _encode(synthesize_image(rng, label, spec.num_classes, height, width), spec)
        with open(path + ext, "wb") as f:
            f.write(data)
        written.append(path + ext)
    return written


def make_sample_folder(root: str | os.PathLike[str], spec: SampleSpec = SampleSpec(),
                       workers: int | None = None) -> list[str]:
    """Write ``spec.num_classes`` class folders of ``spec.per_class`` images under ``root``.

    Deterministic for a given spec, whatever the worker count. Returns the written paths.
    """
    root = os.fspath(root)
    jobs = []
    for label in range(spec.num_classes):
        folder = os.path.join(root, f"class_{label:03d}")
        os.makedirs(folder, exist_ok=True)
        jobs += [(os.path.join(folder, f"img_{i:05d}"), label, i) for i in range(spec.per_class)]
    workers = workers or default_workers()
    return list(ordered_map(_write_chunk, jobs, spec, workers if len(jobs) > 64 else 1))
