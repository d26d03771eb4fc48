"""The host stage: on the CPU, every op after DALI's decode runs here, on a pool of the loader's
threads, with the torch backend's own op code, instead of in DALI's CPU operators.

Why: DALI's CPU operators are slow where its decoders are good. Its resize is scalar for
3-channel images: in the train preset it took ~half of the CPU time per image (perf, 2 cores:
resize 49%, JPEG decode 33%, crop_mirror_normalize 7%), ~1.9 ms per crop where torch's SIMD
antialiased bilinear resize (the same triangle filter as DALI's and Pillow's) takes ~0.36 ms; its
CPU rotate, colour and blur operators are slower still (2 cores, batch 64: ColorJitter, vertical
flip + Rotate and GaussianBlur lists ran at 511, 435 and 574 img/s in DALI; RESULTS.md has the
figures here). DALI still decodes, in its threads (only the crop window of a random-resized
crop); this stage takes the decoded images as they come out (or array records from the feed's
slots, laid out as their windows), each thread taking the batch's next few samples when free
(``run_chunks``: samples differ in cost), runs the ops with the parameters the feed drew
(``Op.decode`` of its vector; where a crop follows a custom op that decides its size, the stage
draws every op itself, as the torch backend does, from whole images), and writes the finished
batch (layout, dtype, normalization) with the output stage's ``fastload.output.BatchWriter``. The
thread that iterates the Loader only starts the threads: O(threads) Python per batch. With
``Loader(host_workers=N)`` the same code runs in N worker processes instead (``host_pool``: each
its own GIL).

The ops are the torch backend's own, so both backends compute the same pixels from the same
decoded image, for every pixel type a store is read as and any channel count (gray, RGB,
multi-channel arrays); test-time views too (``fastload.tta.apply_view`` on each sample: a batch of
B samples and V views is written as B x V samples, then seen as ``(B, V, ...)``).
Per-sample custom ops (``@fastload.op``) run in the same per-sample loop, wherever they sit in
the list, each with the torch backend's generator for the sample (``[seed, epoch, record]``): a
custom op after the preset costs its own work and nothing more (no second pass over a finished
float32 batch, no second pool; it cost 43% of the preset's rate as a tail stage, 19% here).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch

from ...errors import SampleShapeError
from ...ops import Normalize, Op
from ...ops.base import describe_sample, fixed_output_size, guarded, reads_window, sample_rng
from ...ops.custom import BatchOp, CustomOp
from ...output import BatchWriter, OutputSpec, unreferenced
from ...pixels import to_planes
from ...threads import LazyThreadPool, run_chunks
from ...tta import View, apply_view
from .params import ParamLayout
from .share import ThreadShare, threads_cpu_clock

__all__ = ["HostBatch", "HostFinish", "host_finishes", "image_shapes", "tail_input"]


class _Plan(NamedTuple):
    """What the host stage runs: ``ops`` in order; ``size`` the output's height and width, None
    when a custom op decides it (the first sample a thread finishes then tells); ``dtype`` the
    samples' type, None likewise."""

    ops: list[Op]
    size: tuple[int, int] | None
    dtype: np.dtype | None


def _plan(head: Sequence[Op], pixel_dtype: np.dtype) -> _Plan | None:
    """The host stage's plan for ``head`` (the op list without the output's trailing Normalize),
    or None when it cannot run it: every op a built-in that decodes its feed parameters or a
    per-sample custom op (a batch op needs the whole batch: the tail stage runs it), and one output
    size for every input size unless a custom op decides it (a batch needs one: a list of
    built-ins that ends without a fixed-size op stays in DALI, which names the records)."""
    ops = list(head)
    if not ops or any(isinstance(op, BatchOp) for op in ops):
        return None
    if any(op.param_count and type(op).decode is Op.decode for op in ops if not isinstance(op, CustomOp)):
        return None
    if any(isinstance(op, CustomOp) for op in ops):
        return _Plan(ops, None, None)
    size = fixed_output_size(ops)
    if size is None:
        return None
    normalized = any(isinstance(op, Normalize) for op in ops)  # a Normalize mid-list makes float32
    return _Plan(ops, size, np.dtype(np.float32) if normalized else np.dtype(pixel_dtype))


PIXEL_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32))  # every type a store is read as


def host_finishes(head: Sequence[Op], *, device: str, pixel_dtype: np.dtype, channels: int) -> bool:
    """Whether the host stage runs ``head`` (the ops DALI would run): on the CPU, images of any
    pixel type a store is read as (``PIXEL_DTYPES``; float32 went to DALI's CPU operators at half
    the torch backend's rate) and any channel count, and an op list it can run (see ``_plan``):
    every built-in op, with the torch backend's own code, and per-sample custom ops."""
    if device != "cpu" or np.dtype(pixel_dtype) not in PIXEL_DTYPES or channels < 1:
        return False
    return _plan(head, pixel_dtype) is not None


def tail_input(head: Sequence[Op], output: OutputSpec) -> OutputSpec | None:
    """The batch a batch-op tail takes from the host stage (HWC samples, as from a pipeline):
    float32 when the head ends in a Normalize (the host stage runs it per sample), else 8-bit; None
    for 16-bit images without one (the stage takes them from DALI)."""
    normalized = bool(head) and isinstance(head[-1], Normalize)
    if not normalized and output.pixel_dtype != np.uint8:
        return None
    return OutputSpec(dtype="float32" if normalized else "uint8", layout="NHWC", channels=output.channels,
                      pixel_dtype=output.pixel_dtype)


class _Buffers:
    """Output batches reused once nothing refers to them any more.

    A fresh 38 MB batch per step costs the iterating thread ~50 us per image in page faults and
    ``munmap`` (perf: 60% of its time). Each batch here is a NumPy array handed to torch with
    ``torch.from_numpy``, reused once ``fastload.output.unreferenced``.
    """

    _KEEP = 4  # spare batches at most: a caller that keeps every batch gets new ones

    def __init__(self) -> None:
        self._arrays: list[np.ndarray] = []

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        for index in range(len(self._arrays)):  # no loop variable: it would be one more reference
            if unreferenced(self._arrays, index) and self._arrays[index].shape == shape \
                    and self._arrays[index].dtype == dtype:
                return self._arrays[index]
        array = np.empty(shape, dtype)
        if len(self._arrays) < self._KEEP:
            self._arrays.append(array)
        return array


def _thread_started(tids: list[int]) -> None:
    torch.set_num_threads(1)  # per thread (OpenMP): each thread runs on its own core
    tids.append(threading.get_native_id())


class HostFinish:
    """Run the head's ops on DALI's decoded images (or a raw store's arrays) into the output batch.

    Args:
        head: the ops (see ``host_finishes``).
        params: where their drawn parameters sit in the per-sample vector; None: the stage draws
            them itself, per sample from ``[seed, epoch, record]`` as the torch backend does, on
            the sizes it sees (an op that draws from the image size follows a custom op that may
            change it: the feed cannot draw ahead; ``params.drawn_ahead``). Images then come whole.
        cut: the images come whole (neither DALI's decoder nor the feed cut the leading op's
            window): cut it here. Today's window op, a random-resized crop, comes cut: decoded as
            its window, or laid out so by the feed (array records, raw ones included).
        threads: the pool's threads (the loader's ``num_threads``).
        output: the batch to write (the loader's output, or with a tail the batch the tail takes:
            ``tail_input``); its ``normalize`` is applied after the ops.
        seed: the loader's seed: a custom op's generator is seeded ``[seed, epoch, record]``, as
            in the torch backend.
        views: test-time views of each sample (``fastload.tta``), cut around ``final_crop``
            (the op list's last crop, not in ``head``): batches are then ``(B, V, ...)``.
    """

    def __init__(self, head: Sequence[Op], params: ParamLayout | None, *, cut: bool, threads: int,
                 output: OutputSpec, seed: int = 0, views: Sequence[View] = (), final_crop: Op | None = None) -> None:
        plan = _plan([*head, final_crop] if final_crop is not None else head, output.pixel_dtype)
        if plan is None:
            raise ValueError(f"the host stage cannot run {[type(op).__name__ for op in head]}")
        _, self._size, self._dtype = plan
        self._ops = list(head)
        self._views, self._final_crop = tuple(views), final_crop
        # a leading window op (a random-resized crop) comes as its window (decoded, or cut by the
        # feed) or is cut here (images that come whole)
        self._crop = bool(self._ops) and reads_window(self._ops[0])
        # the feed's draws, decoded per op; None: the stage draws them itself (``params`` None)
        self._decoders = [] if params is None else \
            [(k, params.offsets[k], op) for k, op in enumerate(self._ops) if op.param_count]
        self.draws = params is None
        self._custom = {k: op._takes_rng() for k, op in enumerate(self._ops) if isinstance(op, CustomOp)}
        self.cut = cut and self._crop
        self.threads, self.output, self.seed = max(1, threads), output, seed
        self._tids: list[int] = []  # the pool's threads, as the OS knows them (started lazily)
        # the list, not the stage, goes to the threads: they must not keep its output batches alive
        self._pool = LazyThreadPool(self.threads, "fastload-host", initializer=partial(_thread_started, self._tids))
        self._buffers = _Buffers()
        self.share = ThreadShare(self.threads)

    @property
    def ops(self) -> list[Op]:
        return list(self._ops)

    @property
    def param_size(self) -> int:
        """Floats per sample of the feed's parameter vector this stage reads (0 where it draws)."""
        return sum(op.param_count for _, _, op in self._decoders)

    @property
    def size(self) -> tuple[int, int] | None:
        """The output's height and width (None: a custom op decides it)."""
        return self._size

    @property
    def dtype(self) -> np.dtype | None:
        """The samples' type after the ops (None: a custom op decides it)."""
        return self._dtype

    @property
    def views(self) -> tuple[View, ...]:
        return self._views

    @property
    def final_crop(self) -> Op | None:
        return self._final_crop

    def share_with(self, others: Callable[[], float | None]) -> None:
        """Give each batch only the threads its share of the CPU needs against the threads whose
        CPU seconds ``others`` clocks (DALI's: ``fastload.backends.dali.share``)."""
        self.share = ThreadShare(self.threads, threads_cpu_clock(self._tids), others)

    def __call__(self, images: Any, params: np.ndarray, epoch: int = 0,
                 records: Sequence[int] | None = None) -> torch.Tensor:
        """The finished batch from DALI's decoded images (a TensorListCPU of HWC images of the
        pixel type), the batch's parameter vectors, and (for custom ops) its epoch and records."""
        count, per = len(images), max(1, len(self._views))
        batch = HostBatch(images, self.decode_params(params), epoch, range(count) if records is None else [int(r) for r in records])
        out = BatchWriter(np, torch.device("cpu"), count * per, self.output)  # views: B x V samples
        if self._size is not None:
            self._reserve(out, (*self._size, self.output.channels), self._dtype)
        sizing = threading.Lock()  # a custom op decides the size: the first sample done sizes the batch
        run_chunks(self._pool.get(), count, self.share.active, lambda chunk: self.run_chunk(chunk, batch, out, sizing),
                   cost=lambda: _pixels(images))
        self.share.batch_done()
        tensor = out.tensor
        return tensor.view(count, per, *tensor.shape[1:]) if self._views else tensor  # type: ignore[union-attr]

    def _reserve(self, out: BatchWriter, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        out.reserve(*shape, dtype, into=self._buffers.take(out.shape(*shape), np.dtype(out.dtype)))

    def decode_params(self, params: np.ndarray) -> list[list[Any] | None]:
        """Each op's parameters for every sample of the batch (None for an op without any): the
        feed's vectors decoded (``Op.decode``), an op's column of the batch turned into Python
        floats at once (~0.1 us an element to decode, NumPy scalars ~1)."""
        decoded: list[list[Any] | None] = [None] * len(self._ops)
        for k, start, op in self._decoders:
            decoded[k] = [op.decode(values) for values in params[:, start : start + op.param_count].tolist()]
        return decoded

    def run_sample(self, i: int, batch: HostBatch) -> np.ndarray:
        """Sample ``i`` through the ops: the torch backend's code, with the parameters the feed
        drew, a custom op's generator seeded as the torch backend's. An op's error names the op
        and the record (``OpError``)."""
        image = np.asarray(batch.images[i])
        op: Op | None = None
        try:
            if self.draws:  # every op draws here, from the sizes it sees: the torch backend's run_numpy
                rng = sample_rng(self.seed, batch.epoch, batch.records[i])
                for op in self._ops:
                    image = op.numpy(image, rng)
                return image
            for k, op in enumerate(self._ops):
                drawn = batch.params[k]
                if k == 0 and self._crop and not self.cut:  # its window came cut: what is left of the op
                    image = op.after_window(image, None if drawn is None else drawn[i])
                elif k in self._custom:
                    ids = (self.seed, batch.epoch, batch.records[i])
                    image = op.run(image, op.sample_rng(ids) if self._custom[k] else None, ids)  # type: ignore[attr-defined]
                else:
                    image = op.apply(image, None if drawn is None else drawn[i])
        except Exception as exc:
            raise guarded(op, (self.seed, batch.epoch, batch.records[i]), exc) from exc  # type: ignore[arg-type]
        return image

    def _viewed(self, image: np.ndarray) -> list[np.ndarray]:
        """The sample's test-time views (the sample alone without views)."""
        if not self._views:
            return [image]
        return [apply_view(view, image, self._final_crop) for view in self._views]  # type: ignore[arg-type]

    def run_chunk(self, indices: range, batch: HostBatch, out: BatchWriter, sizing: threading.Lock) -> None:
        """A few samples, in one thread: each runs the ops into a staging block laid out as the
        output (its channel planes for NCHW: OpenCV's split of a sample just made, ~1.3 us more
        Python than a NumPy copy into an HWC block but 25-50 us less CPU than splitting the block
        later), then one write finishes them all (normalize, cast); the output itself is the block
        when there is nothing to finish (no Normalize, no cast). Where a custom op decides the size, the
        first sample a thread finishes sizes the batch (every thread starts at once: none waits for
        a first sample run alone)."""
        first = self._viewed(self.run_sample(indices.start, batch))
        if self._size is None:
            with sizing:
                if out.array is None:
                    self._reserve(out, first[0].shape, first[0].dtype)
        height, width, channels = out.sample_shape
        spec = self.output
        direct = spec.normalize is None and out.to_8_bit is None and np.dtype(out.dtype) == np.dtype(out.pixel_dtype)
        per = len(first)  # samples written per sample: its views
        start, stop = indices.start * per, indices.stop * per
        if direct:
            staging = out.array[start:stop]
        else:
            staging = np.empty(spec.shape(stop - start, height, width, channels), out.pixel_dtype)
        for j, i in enumerate(indices):
            for v, image in enumerate(first if j == 0 else self._viewed(self.run_sample(i, batch))):
                if image.shape != (height, width, channels) or (self._size is None and image.dtype != out.pixel_dtype):
                    raise SampleShapeError(
                        f"{describe_sample((self.seed, batch.epoch, batch.records[i]))} came out of the ops "
                        f"{image.shape} {image.dtype} while another of the batch came out {(height, width, channels)} "
                        f"{out.pixel_dtype}; a batch needs one size and type: end the augment list with a fixed-size "
                        "op (RandomResizedCrop, CenterCrop, Resize(size=...)) or make the custom op return one size "
                        "and type")
                if spec.nchw:  # each sample into its planes while it is in the cache (pixels.to_planes)
                    to_planes(image, staging[j * per + v])
                else:
                    staging[j * per + v] = image
        if not direct:
            out.put_range(start, staging.transpose(0, 2, 3, 1) if spec.nchw else staging)  # NHWC views

    def close(self) -> None:
        """Let the pool's threads go."""
        self._pool.close()


def image_shapes(images: Any) -> list[tuple[int, ...]]:
    """Each image's shape, from DALI's TensorList (one call) or from the arrays."""
    return images.shape() if callable(getattr(images, "shape", None)) else [np.shape(x) for x in images]


def _pixels(images: Any) -> list[int]:
    """Each image's height x width (a sample's cost in the host stage follows it: its resize)."""
    return [int(shape[0]) * int(shape[1]) for shape in image_shapes(images)]


class HostBatch(NamedTuple):
    """One batch's inputs to the host stage."""

    images: Any  # DALI's TensorListCPU of HWC images (or windows)
    params: list[list[Any] | None]  # each op's decoded parameters for every sample (None: it has none)
    epoch: int
    records: Sequence[int]
