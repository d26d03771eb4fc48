"""The host stage: on the CPU, every op after DALI's decode runs here, on a pool of the loader's
threads, with the torch backend's own op code, instead of in DALI's CPU operators.

Why: DALI's CPU operators are slow where its decoders are good. Its resize is scalar for
3-channel images: in the train preset it took ~half of the CPU time per image (perf, 2 cores:
resize 49%, JPEG decode 33%, crop_mirror_normalize 7%), ~1.9 ms per crop where torch's SIMD
antialiased bilinear resize (the same triangle filter as DALI's and Pillow's) takes ~0.36 ms; its
CPU rotate, colour and blur operators are slower still (2 cores, batch 64: ColorJitter, vertical
flip + Rotate and GaussianBlur lists ran at 511, 435 and 574 img/s in DALI; RESULTS.md has the
figures here). DALI still decodes, in its threads (only the crop window of a random-resized
crop); this stage takes the decoded images as they come out (or cuts the windows from a raw
store's arrays), each thread a contiguous share of the batch, runs the ops with the parameters
the feed drew (``Op.decode`` of its vector), and writes the finished batch (layout, dtype,
normalization) with the output stage's ``fastload.output.BatchWriter``. The thread that iterates the
Loader only hands out the shares: O(threads) Python per batch.

The ops are the torch backend's own, so both backends compute the same pixels from the same
decoded image, for 8- and 16-bit images of any channel count (gray, RGB, multi-channel arrays).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...ops import Normalize, Op, RandomResizedCrop
from ...ops.custom import CustomOp
from ...ops.geometry import resize_image
from ...output import BatchWriter, OutputSpec
from ...threads import LazyThreadPool, run_all, shares
from .params import ParamLayout

__all__ = ["HostFinish", "host_finishes", "tail_input"]


def _plan(head: Sequence[Op]) -> tuple[list[Op], Normalize | None, tuple[int, int]] | None:
    """The host stage's ops, its final Normalize and the output size, or None when it cannot
    run ``head``: every op a built-in that decodes its feed parameters (custom ops in the head
    need DALI's per-sample ids), a Normalize only at the end, and one output size for every input
    size (a batch needs one: an op list that ends without a fixed-size op stays in DALI, which
    names the records)."""
    ops = list(head)
    normalize = ops.pop() if ops and isinstance(ops[-1], Normalize) else None
    if not ops or any(isinstance(op, (CustomOp, Normalize)) for op in ops):
        return None
    if any(op.param_count and type(op).decode is Op.decode for op in ops):
        return None
    sizes = [(1, 1), (2, 3)]
    for op in ops:
        sizes = [op.output_size(*size) if size is not None else None for size in sizes]
    if sizes[0] is None or sizes[0] != sizes[1]:
        return None
    return ops, normalize, sizes[0]


PIXEL_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def host_finishes(head: Sequence[Op], *, device: str, pixel_dtype: np.dtype, channels: int) -> bool:
    """Whether the host stage runs ``head`` (the ops DALI would run): on the CPU, 8- or 16-bit
    images of any channel count, and an op list it can run (see ``_plan``): every built-in op,
    with the torch backend's own code."""
    if device != "cpu" or np.dtype(pixel_dtype) not in PIXEL_DTYPES or channels < 1:
        return False
    return _plan(head) is not None


def tail_input(head: Sequence[Op], output: OutputSpec) -> OutputSpec | None:
    """The batch a custom-op tail takes from the host stage (HWC samples, as from a pipeline):
    normalized float32 when the head ends in a Normalize, else 8-bit; None for 16-bit images
    without one (the stage takes them from DALI)."""
    normalize = head[-1] if head and isinstance(head[-1], Normalize) else None
    if normalize is None and output.pixel_dtype != np.uint8:
        return None
    return OutputSpec(dtype="float32" if normalize is not None else "uint8", layout="NHWC", channels=output.channels,
                      pixel_dtype=output.pixel_dtype, normalize=normalize)


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
    """Run the head's ops on DALI's decoded images (or a raw store's arrays) into the output batch.

    Args:
        head: the ops (see ``host_finishes``).
        params: where their drawn parameters sit in the per-sample vector.
        cut: the images are whole (arrays): cut each random-resized crop's window here (encoded
            images come decoded as their windows already).
        threads: the pool's threads (the loader's ``num_threads``).
        output: the batch to write (the loader's output, or with a tail the batch the tail takes:
            ``tail_input``); its ``normalize`` is applied, not a Normalize at the end of ``head``.
    """

    def __init__(self, head: Sequence[Op], params: ParamLayout, *, cut: bool, threads: int,
                 output: OutputSpec) -> None:
        plan = _plan(head)
        if plan is None:
            raise ValueError(f"the host stage cannot run {[type(op).__name__ for op in head]}")
        self._ops, normalize, self._size = plan
        if normalize is not None and normalize is not output.normalize:  # the output applies it
            raise ValueError("the host stage applies a Normalize at the end of its ops as its output's")
        # a leading random-resized crop comes as its window (decoded) or is cut here (arrays)
        self._crop = type(self._ops[0]) is RandomResizedCrop
        self._decoders = [(k, params.offsets[k], op) for k, op in enumerate(self._ops)
                          if op.param_count and not (k == 0 and self._crop)]
        self.cut = cut and self._crop
        self.threads, self.output = max(1, threads), output
        self._pool = LazyThreadPool(self.threads, "fastload-host", initializer=_init_thread)
        self._buffers = _Buffers()

    def __call__(self, images: Any, params: np.ndarray) -> torch.Tensor:
        """The finished batch from DALI's decoded images (a TensorListCPU of HWC images of the
        pixel type) and the batch's parameter vectors."""
        count = len(images)
        spec = self.output
        out = BatchWriter(np, torch.device("cpu"), count, spec)
        shape = out.shape(*self._size, spec.channels)
        out.reserve(*self._size, spec.channels, spec.pixel_dtype, into=self._buffers.take(shape, np.dtype(out.dtype)))
        windows = params[:, :4].astype(np.int64) if self.cut else None  # RandomResizedCrop's (y, x, h, w)
        run_all(self._pool.get(), [lambda s=share: self._share(s, images, params, windows, out)
                                   for share in shares(range(count), self.threads)])
        return out.tensor  # type: ignore[return-value]

    def _share(self, indices: range, images: Any, params: np.ndarray, windows: np.ndarray | None,
               out: BatchWriter) -> None:
        """One thread's part: each sample runs the ops (the torch backend's code, parameters
        decoded from the feed's vector) into a staging block of the pixel type laid out as the
        output, then one vectorized write normalizes them all."""
        height, width = self._size
        nchw, c = self.output.nchw, self.output.channels
        staging = np.empty((len(indices), c, height, width) if nchw else (len(indices), height, width, c),
                           self.output.pixel_dtype)
        samples = staging.transpose(0, 2, 3, 1) if nchw else staging  # an NHWC view of it
        for j, i in enumerate(indices):
            image = np.asarray(images[i])
            if windows is not None:
                y, x, h, w = windows[i]
                image = image[y : y + h, x : x + w]
            decoded = {k: op.decode(params[i, start : start + op.param_count]) for k, start, op in self._decoders}
            for k, op in enumerate(self._ops):
                if k == 0 and self._crop:  # the window is cut: what is left of the crop is its resize
                    image = resize_image(image, *op.output_size(1, 1))
                else:
                    image = op.apply(image, decoded.get(k))
            samples[j] = image
        out.put_range(indices.start, samples)

    def close(self) -> None:
        """Let the pool's threads go."""
        self._pool.close()
