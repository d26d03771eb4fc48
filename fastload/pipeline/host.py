"""The host finish: on the CPU, the resize, center crop, mirror and normalize of the train and
eval presets run here, on a pool of the loader's threads, instead of in DALI's CPU operators.

Why: DALI's CPU resize is scalar for 3-channel images: in the train preset it took ~half of
the CPU time per image (perf, 2 cores: resize 49%, JPEG decode 33%, crop_mirror_normalize 7%),
~1.9 ms per crop where torch's SIMD antialiased bilinear resize (the same triangle filter as
DALI's and Pillow's) takes ~0.36 ms. DALI still decodes, in its threads (only the crop window of
a random-resized crop); this stage takes the decoded images as they come out (or cuts the windows
from a raw store's arrays), each thread a contiguous share of the batch, and writes the finished
batch (layout, dtype, normalization) with ``fastload.transforms.output.BatchWriter``. The thread
that iterates the Loader only hands out the shares: O(threads) Python per batch. Numbers:
benchmarks/RESULTS.md, section 10.

The resize and crop are the torch backend's own (``fastload.ops.geometry``), so both backends
compute the same pixels from the same decoded image.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..ops import CenterCrop, Flip, Normalize, Op, RandomResizedCrop, Resize
from ..ops.geometry import resize_image
from ..threads import LazyThreadPool, run_all
from ..transforms.output import NP_DTYPES, BatchWriter
from .params import ParamLayout

__all__ = ["HostFinish", "host_finishes"]


def _geometry(head: Sequence[Op]) -> list[Op] | None:
    """The head's geometric ops when it is one of the host finish's forms, else None: a
    random-resized crop, or a resize to a fixed size, or a resize then a center crop; then at
    most a horizontal flip and a Normalize, in that order."""
    ops = list(head)
    if ops and isinstance(ops[-1], Normalize):
        ops.pop()
    if ops and type(ops[-1]) is Flip and ops[-1].cmn_role() == "mirror":
        ops.pop()
    forms = ([RandomResizedCrop], [Resize], [Resize, CenterCrop])
    if [type(op) for op in ops] not in forms or ops[-1].output_size(1, 1) != ops[-1].output_size(2, 3):
        return None  # (a resize of the shorter side alone gives each image its own size)
    return ops


def host_finishes(head: Sequence[Op], *, device: str, pixel_dtype: np.dtype, channels: int) -> bool:
    """Whether the host finish does ``head`` (the ops DALI would run): on the CPU, for 8-bit RGB
    images, a random-resized crop (the train preset) or a resize and center crop (the eval
    preset), then a horizontal flip and a Normalize (see ``_geometry``)."""
    if device != "cpu" or np.dtype(pixel_dtype) != np.uint8 or channels != 3:
        return False
    return _geometry(head) is not None


class _Buffers:
    """Output batches reused once nothing refers to them any more.

    A fresh 38 MB batch per step costs the iterating thread ~50 us per image in page faults and
    ``munmap`` (perf: 60% of its time). Each batch here is a NumPy array handed to torch with
    ``torch.from_numpy``: every tensor and view of it keeps one reference to the array through
    their shared storage, so an array whose only reference is this list is free to reuse.
    """

    _KEEP = 4  # spare batches at most: a caller that keeps every batch gets new ones

    def __init__(self) -> None:
        self._arrays: list[np.ndarray] = []

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        for array in self._arrays:
            # references: this list, the loop variable, getrefcount's argument
            if sys.getrefcount(array) == 3 and array.shape == shape and array.dtype == dtype:
                return array
        array = np.empty(shape, dtype)
        if len(self._arrays) < self._KEEP:
            self._arrays.append(array)
        return array


def _init_thread() -> None:
    torch.set_num_threads(1)  # per thread (OpenMP): each share runs on its own core


class HostFinish:
    """Resize (or cut), crop, mirror and normalize DALI's decoded images into the output batch.

    Args:
        head: the ops (see ``host_finishes``).
        params: where their drawn parameters sit in the per-sample vector.
        cut: the images are whole (arrays): cut each random-resized crop's window here (encoded
            images come decoded as their windows already).
        threads: the pool's threads (the loader's ``num_threads``).
        layout: "NCHW" or "NHWC".
        output_dtype: "float32", "float16" or "uint8" (uint8 output is not normalized).
    """

    def __init__(self, head: Sequence[Op], params: ParamLayout, *, cut: bool, threads: int, layout: str,
                 output_dtype: str) -> None:
        geometry = _geometry(head)
        if geometry is None:
            raise ValueError(f"the host finish cannot run {[type(op).__name__ for op in head]}")
        self._geometry = geometry
        self._crop = type(geometry[0]) is RandomResizedCrop  # its window comes cut (encoded) or is cut here
        self._flip_at = next((params.offsets[i] for i, op in enumerate(head) if isinstance(op, Flip)), None)
        self._normalize = next((op for op in head if isinstance(op, Normalize)), None)
        self._size: tuple[int, int] = geometry[-1].output_size(1, 1)  # type: ignore[assignment]
        self.cut = cut and self._crop
        self.threads, self.layout, self.output_dtype = max(1, threads), layout, output_dtype
        self._pool = LazyThreadPool(self.threads, "fastload-host", initializer=_init_thread)
        self._buffers = _Buffers()

    def __call__(self, images: Any, params: np.ndarray) -> torch.Tensor:
        """The finished batch from DALI's decoded images (a TensorListCPU of HWC uint8 images)
        and the batch's parameter vectors."""
        count = len(images)
        out = BatchWriter(np, torch.device("cpu"), count, self.layout, NP_DTYPES[self.output_dtype],
                          self._normalize, 255.0)
        shape = out.shape(*self._size, 3)
        out.reserve(*self._size, 3, np.dtype(np.uint8), into=self._buffers.take(shape, np.dtype(out.dtype)))
        mirror = params[:, self._flip_at] > 0.5 if self._flip_at is not None else np.zeros(count, bool)
        windows = params[:, :4].astype(np.int64) if self.cut else None  # RandomResizedCrop's (y, x, h, w)
        shares = [range(count * k // self.threads, count * (k + 1) // self.threads) for k in range(self.threads)]
        run_all(self._pool.get(), [lambda s=share: self._share(s, images, windows, mirror, out) for share in shares])
        return out.tensor  # type: ignore[return-value]

    def _share(self, indices: range, images: Any, windows: np.ndarray | None, mirror: np.ndarray,
               out: BatchWriter) -> None:
        """One thread's part: its samples gather, resized, in an 8-bit staging block laid out as
        the output, then one vectorized write normalizes them all (per-sample Python ~40 us)."""
        height, width = self._size
        nchw = self.layout == "NCHW"
        staging = np.empty((len(indices), 3, height, width) if nchw else (len(indices), height, width, 3), np.uint8)
        samples = staging.transpose(0, 2, 3, 1) if nchw else staging  # an NHWC view of it
        for j, i in enumerate(indices):
            image = np.asarray(images[i])
            if windows is not None:
                y, x, h, w = windows[i]
                image = image[y : y + h, x : x + w]
            if self._crop:  # the window is cut: what is left of the crop is its resize
                image = resize_image(image, height, width)
            else:
                for op in self._geometry:  # Resize, CenterCrop: the torch backend's own code
                    image = op.apply(image, None)
            samples[j] = image[:, ::-1] if mirror[i] else image
        out.put_range(indices.start, samples)

    def close(self) -> None:
        """Let the pool's threads go."""
        self._pool.close()
