"""The pure-PyTorch backend: DataLoader worker processes, OpenCV decode, NumPy operators.

It serves machines without DALI (Windows, macOS, CPU-only boxes) and is the reference the
tests compare the DALI backend against: both draw every random parameter from
``[seed, epoch, record]``. Each worker builds a whole batch (decode, augment,
stack) so only one tensor per batch crosses the process boundary; pixels travel as uint8 (or
uint16) and are normalized on the output device, as timm's fast collate + prefetcher do.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ...errors import FastloadError, WorkerDiedError
from ...ops import Op
from ...ops.base import fixed_output_size, guarded, reads_window, sample_rng
from ...ops.custom import CustomOp, run_numpy
from ...output import (
    OUTPUT_DTYPES,
    OutputSpec,
    finish_tensor,
    split_normalize,
    to_channels,
    write_samples,
)
from ...pixels import pixel_dtype, to_pixel_dtype
from ...stats import StageClock
from ...tta import apply_view, split_for_views
from ...workers.failures import error_report, rebuild_error
from ...workers.memory import retain_freed_memory
from ..base import BackendConfig
from .slots import BatchSlots

__all__ = ["TorchBackend"]

BatchKey = tuple[int, tuple[int, ...], int]  # (epoch, record indices, shared block or -1)
PassKeys = list[tuple[int, tuple[int, ...]]]  # one pass's batches: (epoch, record indices) each


class _BatchDataset(Dataset):
    """Maps a batch key to a stacked batch. Holds the store by path (it pickles as its path)."""

    def __init__(self, store: Any, ops: list[Op], config: BackendConfig, crop: Any = None,
                 finish: OutputSpec | None = None, slots: BatchSlots | None = None) -> None:
        self.store = store
        self.ops = ops
        self.config = config
        self.crop = crop  # with test-time views: the final crop, cut per view
        self.finish = finish  # CPU output: finished here, off the training thread
        self.slots = slots  # CPU output of one known shape: written into reused shared memory
        self.pixel = pixel_dtype(store)  # a store mixing 8- and 16-bit images is read as 16-bit
        self._shapes: np.ndarray | None = None  # the records' sizes, read in the worker

    def __len__(self) -> int:  # keys come from the sampler; the length is not used
        return 0

    def _decode(self, index: int, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        image = to_pixel_dtype(self.store.decode(index, window, verify=self.config.verify), self.pixel)
        return to_channels(image, self.config.channels, f"{self.store.path}: record {index}")

    def _windowed(self, op: Op, index: int, rng: np.random.Generator) -> np.ndarray:
        """Record ``index`` through ``op``, a window op (a random-resized crop), drawn from the
        record's size in the store's table: only its window is decoded where the codec can (a
        6-channel .npy stack: about half the interleave), then the rest of the op runs."""
        if self._shapes is None:
            self._shapes = self.store.record_shapes()  # here, in the worker: not pickled to it
        height, width = (int(n) for n in self._shapes[index][:2])
        try:
            params = op.as_fed(op.draw(rng, height, width))
            window = op.window(params)
        except Exception as exc:
            raise guarded(op, rng, exc) from exc
        image = self._decode(index, window)
        try:
            return op.after_window(image, params)
        except Exception as exc:
            raise guarded(op, rng, exc) from exc

    def _augment(self, epoch: int, indices: tuple[int, ...]) -> list[np.ndarray]:
        rngs = [sample_rng(self.config.seed, epoch, i) for i in indices]
        ops = self.ops
        if ops and reads_window(ops[0]):  # the same draws in the same order as op.numpy's
            images = run_numpy(ops[1:], [self._windowed(ops[0], i, r) for i, r in zip(indices, rngs)], rngs)
        else:
            images = run_numpy(ops, [self._decode(i) for i in indices], rngs)
        if not self.config.views:
            # no copy here: the output stage reads any strides (a resize's channel planes included)
            return [np.asarray(im) for im in images]
        return [np.stack([np.ascontiguousarray(apply_view(v, im, self.crop)) for v in self.config.views])
                for im in images]

    def __getitem__(self, key: BatchKey) -> tuple[Any, Any, tuple[float, float]]:
        """The batch ``key`` names; in a DataLoader worker, a fastload error comes back as
        ``(None, its JSON report)``: torch would rebuild it by calling its class with its own
        text, which fastload's errors (built from their facts) refuse, leaving a RuntimeError."""
        if torch.utils.data.get_worker_info() is None:
            return self._batch(key)
        try:
            return self._batch(key)
        except FastloadError as exc:
            return None, error_report(exc), (0.0, 0.0)

    def _batch(self, key: BatchKey) -> tuple[torch.Tensor | int, torch.Tensor, tuple[float, float]]:
        """The batch's images (or the number of the shared block they were written into), labels,
        and the seconds of its two stages."""
        epoch, indices, slot = key
        started = time.perf_counter()  # the stall meter's stages (fastload.stats), timed in the worker
        images = self._augment(epoch, indices)
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(f"augmented images differ in shape {sorted(shapes)}; end the augment "
                             "list with a fixed-size op (RandomResizedCrop, CenterCrop, Resize(size=...))")
        labels = torch.as_tensor(self.store.labels[np.asarray(indices)], dtype=torch.int64)
        if self.finish is not None and not self.config.views:  # CPU output: one pass per sample
            augmented = time.perf_counter()
            block = self.slots.target(slot, len(images)) if slot >= 0 and self.slots is not None else None
            if block is not None and block.shape == self.finish.shape(len(images), *images[0].shape):
                write_samples(images, self.finish, into=block)
                return slot, labels, (augmented - started, time.perf_counter() - augmented)
            return write_samples(images, self.finish), labels, (augmented - started, time.perf_counter() - augmented)
        batch = np.stack(images)
        if batch.dtype == np.uint16:  # torch has limited uint16 support: carry as int32
            batch = batch.astype(np.int32)
        out = torch.from_numpy(batch)
        augmented = time.perf_counter()
        out = finish_tensor(out, self.finish) if self.finish is not None else out
        return out, labels, (augmented - started, time.perf_counter() - augmented)


def _pass_keys(batches: Sequence[np.ndarray], epoch: int) -> PassKeys:
    return [(epoch, tuple(int(i) for i in batch)) for batch in batches]


def _init_worker(worker_id: int) -> None:
    """A worker keeps the memory it frees for its next sample (``workers.memory``). Nothing that
    waits on threads here: a worker is forked from a process whose thread pools it did not copy."""
    retain_freed_memory()


class _EpochSampler(Sampler):
    """Yields the batch keys of the passes queued (``queue``: the pass just opened, then the ones
    guessed to follow it), each with a free shared block to write into (-1: none). The backend
    re-arms the queue before each pass that resets the workers, and adds guesses as passes open;
    the DataLoader asks for each key as it sends the task, in the training process. ``ended``:
    the queue ran dry (keys added after that are never asked for)."""

    def __init__(self, slots: BatchSlots | None = None) -> None:
        self.queue: deque[PassKeys] = deque()
        self.slots = slots
        self.ended = False

    def __iter__(self) -> Iterator[BatchKey]:
        self.ended = False
        if self.slots is not None:  # runs at the first task: the previous pass's tasks are done
            self.slots.reset()
        while self.queue:
            for epoch, indices in self.queue.popleft():
                yield epoch, indices, self.slots.take() if self.slots is not None else -1
        self.ended = True

    def __len__(self) -> int:
        return sum(len(keys) for keys in self.queue)


class _RunningOn(NamedTuple):
    """A DataLoader iterator whose pass ended while its workers went on into the passes guessed to
    follow (``guesses``, in order, already in its sampler's queue)."""

    iterator: Iterator[Any]
    guesses: deque[PassKeys]


class _TorchPass:
    """One pass on one DataLoader (its workers persist between passes)."""

    def __init__(self, backend: TorchBackend, loader: DataLoader, iterator: Iterator[Any], batches: int,
                 guesses: deque[PassKeys]) -> None:
        self._backend, self._loader = backend, loader
        self._iter: Iterator[Any] | None = iterator
        self._left = batches
        self._guesses = guesses  # the passes its workers go on into once this one is sent

    def __iter__(self) -> _TorchPass:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iter is None or self._left == 0:
            self.close()
            raise StopIteration
        try:
            images, labels, (decode_ops, finish) = next(self._iter)
        except RuntimeError as exc:
            self.close()
            if "DataLoader worker" in str(exc) and ("killed" in str(exc) or "exited unexpectedly" in str(exc)):
                raise WorkerDiedError(f"a torch-backend worker process died: {exc}") from exc
            raise
        except BaseException:
            self.close()
            raise
        if images is None:  # a worker's fastload error (see _BatchDataset.__getitem__)
            self.close()
            raise rebuild_error(labels, "a torch-backend DataLoader worker")
        if isinstance(images, int):  # written into a shared block (see BatchSlots)
            images = self._loader.sampler.slots.batch(images, len(labels))
        self._left -= 1
        if self._left == 0:  # the plan is done: the loader may serve the next pass at once
            self.close()
        clock = self._backend.clock
        clock.add("decode_ops", decode_ops)
        clock.add("host_finish", finish)
        return self._backend._finish(images, labels)

    def close(self) -> None:
        if self._iter is not None:
            # a pass that ended (not one broken off) leaves its workers going on into the guesses
            running = _RunningOn(self._iter, self._guesses) if self._left == 0 and self._guesses else None
            self._iter = None
            self._backend._give_back(self._loader, running)


class TorchBackend:
    """Batches from a store with torch.utils.data worker processes (``num_threads`` of them).

    Each pass takes a DataLoader (with its persistent workers) from a small pool, so several
    iterators can run at once, each with its own workers, as with a non-persistent DataLoader.

    Its workers do not wait at the end of a pass: the passes the Loader expects next (``following``:
    the next epochs from their start) are queued after it, and the workers go on into them as the
    pass's last batches are made. A DataLoader idles at each epoch's end (its last batches are made
    by some workers while the others wait, then it resets them all) for about one batch per worker:
    a 200-image epoch of 64-image batches ran at 268 img/s where a 1,000-image one ran at 376 (16-bit
    PNGs, 2 workers). The next pass goes on with the workers' results if it is the one expected;
    otherwise (``set_epoch`` elsewhere, a resume) the DataLoader resets them, dropping at most the
    tasks in flight.
    """

    def __init__(self, store: Any, ops: Sequence[Op], config: BackendConfig, pin_memory: bool = False) -> None:
        self.config = config
        self.store = store
        self.crop = None
        if config.views:
            self.sample_ops, self.crop, self.normalize = split_for_views(ops, config.views)
        else:
            self.sample_ops, self.normalize = split_normalize(ops)
        self.device = torch.device("cuda", config.device_id) if config.device == "cuda" else torch.device("cpu")
        # pinning needs CUDA (DataLoader warns without it); CUDA output is always pinned
        self.pin_memory = (pin_memory and torch.cuda.is_available()) or self.device.type == "cuda"
        # finished in the workers for CPU output, on the device for CUDA output (uint8 crosses the
        # host there, as in timm)
        self.output = OutputSpec(dtype=config.output_dtype, layout=config.layout, channels=config.channels,
                                 pixel_dtype=pixel_dtype(store), normalize=self.normalize)
        self.clock = StageClock()  # the Loader hands its stall meter's clock (fastload.stats)
        self._idle: list[DataLoader] = []
        self._all: list[DataLoader] = []
        self._running: dict[int, _RunningOn] = {}  # by id of an idle DataLoader whose workers went on
        self._last_epoch: int | None = None  # the epoch of the pass opened last

    def _slots(self, workers: int) -> BatchSlots | None:
        """Reused shared-memory batches, where workers finish CPU batches of one size known ahead
        (the op list ends in a fixed size; no test-time views; not pinned, which would copy).
        Custom ops are taken to keep the size (the usual case: ``x * 0.9``, noise): a batch that
        comes out otherwise is written into fresh memory by its worker instead (``_batch``)."""
        if workers == 0 or self.device.type != "cpu" or self.pin_memory or self.config.views:
            return None
        size = fixed_output_size([op for op in self.sample_ops if not isinstance(op, CustomOp)])
        if size is None:
            return None
        shape = self.output.shape(self.config.batch_size, *size)
        # every task in flight, plus a few batches the caller still holds
        return BatchSlots(workers * self.config.prefetch + 3, shape, OUTPUT_DTYPES[self.output.dtype])

    def _new_loader(self) -> DataLoader:
        workers = max(0, self.config.num_threads)
        slots = self._slots(workers)
        loader = DataLoader(
            _BatchDataset(self.store, self.sample_ops, self.config, self.crop,
                          self.output if self.device.type == "cpu" else None, slots), batch_size=None,
            sampler=_EpochSampler(slots), num_workers=workers, persistent_workers=workers > 0,
            prefetch_factor=self.config.prefetch if workers > 0 else None, pin_memory=self.pin_memory,
            worker_init_fn=_init_worker,
        )
        self._all.append(loader)
        return loader

    def _give_back(self, loader: DataLoader, running: _RunningOn | None = None) -> None:
        if running is not None:
            self._running[id(loader)] = running
        self._idle.append(loader)

    def open_pass(self, batches: Sequence[np.ndarray], epoch: int,
                  following: Callable[[int], Sequence[np.ndarray]] | None = None) -> _TorchPass:
        """Start a pass over ``batches`` (record indices) of ``epoch``; ``following(e)``: the
        batches of a later epoch ``e`` from its start, for the workers to go on into (a guess)."""
        loader = self._idle.pop() if self._idle else self._new_loader()
        keys = _pass_keys(batches, epoch)
        # a Loader pinned to one epoch (set_epoch once) repeats it: the guesses then repeat it too
        step, self._last_epoch = (0 if epoch == self._last_epoch else 1), epoch
        sampler: _EpochSampler = loader.sampler  # type: ignore[assignment]
        running = self._running.pop(id(loader), None)
        iterator: Iterator[Any] | None = None
        if running is not None and running.guesses[0] == keys:  # its workers are on this pass already
            iterator, guesses = running.iterator, running.guesses
            guesses.popleft()
        else:
            sampler.queue, sampler.ended, guesses = deque([keys]), False, deque()
        if loader.num_workers > 0 and following is not None and not sampler.ended:  # (ended: never asked)
            self._guess(sampler, guesses, following, epoch, step, loader.num_workers * self.config.prefetch)
        if iterator is None:  # the DataLoader resets its workers (dropping tasks for a guess) and starts
            iterator = iter(loader)
        return _TorchPass(self, loader, iterator, len(keys), guesses)

    @staticmethod
    def _guess(sampler: _EpochSampler, guesses: deque[PassKeys], following: Callable[[int], Sequence[np.ndarray]],
               epoch: int, step: int, depth: int) -> None:
        """Queue the passes expected after ``epoch``'s (each ``step`` epochs on: 1, or 0 for a
        repeated epoch) until more batches are queued after it than the DataLoader keeps in flight
        (``depth``; one more, so its sampler never runs dry first)."""
        ahead = sum(len(keys) for keys in guesses)
        later = guesses[-1][0][0] if guesses else epoch
        while ahead <= depth:
            later += step
            keys = _pass_keys(following(later), later)
            if not keys:
                return
            sampler.queue.append(keys)
            guesses.append(keys)
            ahead += len(keys)

    def _finish(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device.type == "cpu":  # finished in the worker
            return images, labels
        with self.clock.gpu_span("transfer", self.device):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
        with self.clock.gpu_span("host_finish", self.device):
            return finish_tensor(images, self.output), labels

    def close(self) -> None:
        self._running = {}
        for loader in self._all:
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
        self._all, self._idle = [], []
