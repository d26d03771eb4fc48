"""The host stage in worker processes: each batch's ops run in processes of their own, not on
threads of the Loader's process.

Why: on threads, every op of every sample holds the Loader's process's GIL a little (the torch
resize call's argument parsing, the split into planes, the loop itself: ~20 us a sample
uncontended on 2 cores, ~40 where every core also decodes), and one GIL caps the whole loader
however many cores it has (``benchmarks/run.py``'s GIL column). In processes each holds its own:
the Loader's process only copies DALI's decoded images into shared memory (one copy a sample,
which releases the GIL) and hands out chunks of the batch; the processes run the same code as the
threads (``HostFinish``, built from the same op list in each process) and write the finished
samples into an output batch in shared memory that becomes the Loader's tensor without a copy.

Shared memory is anonymous memfds, inherited by the workers (``fastload.workers``: fresh
interpreters, JSON messages, a dead worker named at once). One input slot (the batch in flight)
and a few output slots, each reused once nothing refers to its batch; a caller that keeps every
batch gets copies from a spare slot.

Where it applies (``HostSpec.of``): every op list the threads run, per-sample custom ops
included where a worker can import them (by ``module:qualname``, from the parent's ``sys.path``;
not from the script being run, ``__main__``, which a worker would have to run again, nor from
inside a function); where a custom op decides the output's size, the batch's first sample is run
through the ops here first (one sample a batch) to lay the batch out. Test-time views, functions
no worker can import, and machines without memfds stay on the threads.
"""

from __future__ import annotations

import json
import os
import select
import struct
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from ...errors import SampleShapeError, WorkerDiedError
from ...ops import Normalize, Op
from ...ops.base import describe_sample
from ...ops.custom import CustomOp
from ...output import NP_DTYPES, OutputSpec, unreferenced
from ...threads import LazyThreadPool, run_all
from ...workers.channel import read_exact, read_message, send_message, write_all
from ...workers.failures import rebuild_error
from ...workers.process import WorkerProcess, spawn
from ...workers.slots import Slot, align, close_slots
from .host import HostBatch, HostFinish, image_shapes
from .share import ThreadShare, processes_cpu_clock

__all__ = ["HostPool", "HostSpec", "REQUEST", "RESPONSE", "host_pool", "input_layout"]

# in slot, out slot, in capacity, out capacity, count, start, stop, epoch, batch seq, then the
# samples' height, width, channels and type after the ops (NumPy's dtype.str)
REQUEST = struct.Struct("<IIQQIIIqqIII4s")
RESPONSE = struct.Struct("<IIq")  # status, chunk start, batch seq
OK, FAILED, READY = 0, 1, 2
SPAN = 4  # int64s per sample in an input slot: byte offset, height, width, channels
_START_TIMEOUT_S = 120.0
_WORKER_MODULE = "fastload.backends.dali.host_worker"
_KEEP = 4  # output slots handed out as batches; one more is the spare
_ADVICE = "start a new pass over the Loader to restart the host stage"


def input_layout(count: int, params: int) -> tuple[int, int, int]:
    """``(params_at, records_at, data_at)`` in an input slot of ``count`` samples: spans
    ``int64[count, 4]`` at 0, parameters ``float32[count, params]``, records ``int64[count]``, then
    the samples' pixels, each aligned to 64 bytes."""
    params_at = align(8 * SPAN * count)
    records_at = align(params_at + 4 * count * params)
    return params_at, records_at, align(records_at + 8 * count)


@dataclass(frozen=True)
class HostSpec:
    """What a host worker builds its ``HostFinish`` from, as plain JSON-able values."""

    ops: tuple[dict[str, Any], ...]
    cut: bool
    output: dict[str, Any]
    seed: int
    path: tuple[str, ...] = ()  # the parent's sys.path: where a custom op's module is found
    draws: bool = False  # the stage draws the ops' parameters itself (``HostFinish(params=None)``)

    @staticmethod
    def refusal(finish: HostFinish) -> str | None:
        """Why workers cannot run ``finish`` (None: they can)."""
        if finish.views or finish.final_crop is not None:
            return "test-time views are cut on the threads"
        for op in finish.ops:
            if isinstance(op, CustomOp) and op.function.startswith("__main__:"):
                return (f"custom op {op.function} is defined in the script being run, which a worker would have "
                        "to run again to import it: define it in a module of your own")
            try:
                op.to_config()
            except (TypeError, ValueError) as exc:  # a custom op defined inside a function
                return str(exc)
        return None

    @classmethod
    def of(cls, finish: HostFinish) -> HostSpec | None:
        """The spec of ``finish``; None where workers cannot run it (``refusal`` says why)."""
        if cls.refusal(finish) is not None:
            return None
        ops = tuple(op.to_config() for op in finish.ops)
        out = finish.output
        output = {"dtype": out.dtype, "layout": out.layout, "channels": int(out.channels),
                  "pixel_dtype": np.dtype(out.pixel_dtype).name,
                  "normalize": None if out.normalize is None else out.normalize.to_config()}
        return cls(ops, bool(finish.cut), output, int(finish.seed), tuple(p for p in sys.path if isinstance(p, str)),
                   finish.draws)

    def to_json(self) -> bytes:
        return json.dumps({"ops": list(self.ops), "cut": self.cut, "output": self.output, "seed": self.seed,
                           "path": list(self.path), "draws": self.draws}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> HostSpec:
        data = json.loads(raw)
        return cls(tuple(data["ops"]), bool(data["cut"]), data["output"], int(data["seed"]), tuple(data["path"]),
                   bool(data["draws"]))

    def build(self) -> HostFinish:
        """The host stage, in a worker (custom ops' modules imported from the parent's path)."""
        from ...ops.config import from_config
        from .params import ParamLayout

        sys.path[:] = [*self.path, *(p for p in sys.path if p not in self.path)]
        ops: list[Op] = from_config(list(self.ops))
        fields = dict(self.output)
        norm = fields.pop("normalize")
        output = OutputSpec(**fields, normalize=None if norm is None else from_config([norm])[0])  # type: ignore[arg-type]
        assert output.normalize is None or isinstance(output.normalize, Normalize)
        return HostFinish(ops, None if self.draws else ParamLayout(ops), cut=self.cut, threads=1, output=output,
                          seed=self.seed)


def host_pool(finish: HostFinish, workers: int, batch_size: int, name: str) -> HostFinish | HostPool:
    """``finish`` run by ``workers`` processes where they can run it (``HostSpec.of``; Linux's
    memfds), else ``finish`` itself (its threads), with a warning that says why."""
    if workers < 1:
        return finish
    reason = HostSpec.refusal(finish) or (None if hasattr(os, "memfd_create") else "no memfds on this system")
    if reason is not None:
        warnings.warn(f"host_workers={workers}: the host stage runs on threads instead: {reason}", stacklevel=2)
        return finish
    return HostPool(finish, HostSpec.of(finish), workers, batch_size, name)  # type: ignore[arg-type]


class HostPool:
    """``workers`` host processes running ``finish``'s ops into shared-memory batches; called as
    ``HostFinish`` is.

    Args:
        finish: the host stage as the threads would run it (the workers build its twin from
            ``spec``).
        spec: ``HostSpec.of(finish)``.
        workers: processes to start.
        batch_size: samples a batch at most (sizes the output slots).
        name: how errors name the data (the store's path).
    """

    def __init__(self, finish: HostFinish, spec: HostSpec, workers: int, batch_size: int, name: str,
                 copiers: int = 2) -> None:
        self.threads, self.output, self.seed = max(1, workers), finish.output, finish.seed
        self._finish, self._batch_size = finish, batch_size
        # the samples' height, width, channels and type after the ops: the list's, or (a custom op
        # decides them) the last batch's
        self._form: tuple[int, int, int, np.dtype] | None = None
        if finish.size is not None and finish.dtype is not None:
            self._form = (*finish.size, int(self.output.channels), np.dtype(finish.dtype))
        self._in = Slot("fastload-host-in")
        self._outs = [Slot(f"fastload-host-out-{i}") for i in range(_KEEP + 1)]
        self._arrays = [np.empty(0, NP_DTYPES[self.output.dtype]) for _ in self._outs]  # sized by the first batch
        self._workers: list[WorkerProcess] = []
        slots = [self._in, *self._outs]
        self._finalizer = weakref.finalize(self, close_slots, os.getpid(), self._workers, slots)
        fds = [slot.fd for slot in slots]
        for index in range(self.threads):
            self._workers.append(spawn(_WORKER_MODULE, ["--slots", ",".join(map(str, fds))], pass_fds=fds,
                                       name=f"fastload host worker {index} (pid {{pid}}) for {name}"))
        raw = spec.to_json()
        for worker in self._workers:
            try:
                send_message(worker.inp, raw)
            except BrokenPipeError:
                raise worker.died("starting", _ADVICE) from None
        for worker in self._workers:
            self._await_ready(worker)
        self._seq = 0
        self.share = ThreadShare(self.threads)
        self._copiers = LazyThreadPool(copiers, "fastload-host-copy")

    def _probe(self, images: Any, params: np.ndarray, epoch: int, records: np.ndarray) -> tuple[int, int, int, np.dtype]:
        """The samples' height, width, channels and type after the ops where a custom op decides
        them: those of the batch's first sample, run through the ops here (the workers need the
        batch's layout before they start). Done for the first batch, then only for a batch that
        does not come out as the one before (``SampleShapeError`` from a worker)."""
        finish = self._finish
        first = finish.run_sample(0, HostBatch(images, finish.decode_params(params[:1]), epoch, records[:1].tolist()))
        if first.ndim != 3:
            raise ValueError(f"{describe_sample((self.seed, epoch, int(records[0])))} came out of the ops with shape "
                             f"{first.shape}; the host stage takes height x width x channels images")
        return (*first.shape, first.dtype)  # type: ignore[return-value]

    def _output(self, index: int, form: tuple[int, int, int, np.dtype]) -> np.ndarray:
        """Output slot ``index`` as a whole batch of samples of ``form`` (laid out anew, and the
        slot grown, where the form changed: the slot is free)."""
        height, width, channels, _ = form
        shape = self.output.shape(self._batch_size, height, width, channels)
        if self._arrays[index].shape != shape:
            slot, dtype = self._outs[index], np.dtype(NP_DTYPES[self.output.dtype])
            slot.reserve(int(np.prod(shape)) * dtype.itemsize)
            self._arrays[index] = np.frombuffer(slot.view(), dtype, int(np.prod(shape))).reshape(shape)
        return self._arrays[index]

    def _await_ready(self, worker: WorkerProcess) -> None:
        ready, _, _ = select.select([worker.out], [], [], _START_TIMEOUT_S)
        if not ready:
            raise WorkerDiedError(f"{worker.name} did not start within {_START_TIMEOUT_S:.0f} s")
        status = self._read(worker, "starting")
        if status == FAILED:
            raise self._failure(worker, "starting")
        if status != READY:
            raise WorkerDiedError(f"{worker.name} answered {status} instead of ready")

    def share_with(self, others: Callable[[], float | None]) -> None:
        """As ``HostFinish.share_with``: the workers' CPU seconds against ``others``'."""
        self.share = ThreadShare(self.threads, processes_cpu_clock(self.pids), others)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def close(self) -> None:
        """Stop the workers and free the shared memory (also done when the pool is collected)."""
        self._finalizer()
        self._copiers.close()

    # --- a batch ------------------------------------------------------------------------------
    def __call__(self, images: Any, params: np.ndarray, epoch: int = 0,
                 records: Sequence[int] | None = None) -> torch.Tensor:
        """As ``HostFinish.__call__``: the finished batch, its ops run in the workers."""
        count = len(images)
        records = np.arange(count) if records is None else np.asarray(records, np.int64)
        self._seq += 1
        out = self._free_output()
        workers = self._workers[: max(1, min(self.threads, self.share.active))]
        starts, pixels = self._lay_out(images, params, records)
        chunks = _even_chunks(pixels, 2 * len(workers))
        assumed = self._form is not None and self._finish.size is None  # a custom op sized the last batch
        form = self._form or self._probe(images, params, epoch, records)
        try:
            array = self._run(images, starts, chunks, workers, out, epoch, form)
        except SampleShapeError:
            if not assumed:
                raise
            # this batch comes out in another form than the last: its first sample tells which (as on threads)
            form = self._probe(images, params, epoch, records)
            array = self._run(images, starts, chunks, workers, out, epoch, form)
        self._form = form
        self.share.batch_done()
        if out == _KEEP:
            return torch.from_numpy(array[:count].copy())
        # the whole slot's array to torch, then the batch's part: every tensor made of it refers to
        # that array (a NumPy slice of it would refer to the map instead: ``unreferenced`` needs it)
        return torch.from_numpy(array)[:count]

    def _run(self, images: Any, starts: list[int], chunks: list[range], workers: list[WorkerProcess], out: int,
             epoch: int, form: tuple[int, int, int, np.dtype]) -> np.ndarray:
        """The batch's chunks run on ``workers`` into output slot ``out`` laid out for samples of
        ``form``; the first error a worker reported is raised once every chunk sent is answered."""
        array = self._output(out, form)
        head = (0, out + 1, self._in.capacity, self._outs[out].capacity, len(starts))
        tail = (epoch, self._seq, *form[:3], np.dtype(form[3]).str.encode())
        busy = [0] * len(workers)
        try:
            self._send(images, starts, chunks, workers, busy, head, tail)
        finally:  # every chunk sent is answered before the slots are used again, even on an error
            error = self._collect(workers, busy)
        if error is not None:
            raise error
        return array

    def _lay_out(self, images: Any, params: np.ndarray, records: np.ndarray) -> tuple[list[int], np.ndarray]:
        """The batch's spans, parameters and records into the input slot (grown for its pixels);
        returns where each sample's pixels go and each sample's pixel count (its cost)."""
        count = len(records)
        k = params.shape[1] if params.ndim == 2 else 0
        shapes = np.array([(*shape, 1)[:3] for shape in image_shapes(images)], np.int64).reshape(count, 3)
        sizes = align(shapes.prod(axis=1) * np.dtype(self.output.pixel_dtype).itemsize)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        params_at, records_at, data_at = input_layout(count, k)
        self._in.reserve(data_at + int(sizes.sum()))
        buf = self._in.view()
        spans = np.frombuffer(buf, np.int64, SPAN * count, 0).reshape(count, SPAN)
        spans[:, 0], spans[:, 1:] = offsets, shapes
        if k:
            np.frombuffer(buf, np.float32, count * k, params_at)[:] = params.reshape(-1)
        np.frombuffer(buf, np.int64, count, records_at)[:] = records
        self._data = np.frombuffer(buf, np.uint8, len(buf) - data_at, data_at)
        return offsets.tolist(), shapes[:, 0] * shapes[:, 1]

    def _send(self, images: Any, starts: list[int], chunks: list[range], workers: list[WorkerProcess],
              busy: list[int], head: tuple[Any, ...], tail: tuple[Any, ...]) -> None:
        """On the copy threads, each chunk's samples into the input slot (NumPy releases the GIL
        while it copies), then the chunk to its worker: a worker starts as soon as its chunk is
        there, and the Loader's thread only waits."""
        data, lock, n, pixel = self._data, threading.Lock(), len(workers), np.dtype(self.output.pixel_dtype)

        def copy_and_send(mine: range) -> None:
            for j in mine:
                for i in chunks[j]:
                    sample = np.asarray(images[i])
                    if sample.dtype != pixel:  # laid out for the store's pixel type
                        raise TypeError(f"the host stage takes {pixel} images, got {sample.dtype} (sample {i})")
                    data[starts[i] : starts[i] + sample.nbytes].view(sample.dtype).reshape(sample.shape)[...] = sample
                worker = workers[j % n]
                try:
                    write_all(worker.inp, REQUEST.pack(*head, chunks[j].start, chunks[j].stop, *tail))
                except BrokenPipeError:
                    raise worker.died(f"running the ops of a batch's samples {chunks[j].start}-{chunks[j].stop - 1}",
                                      _ADVICE) from None
                with lock:
                    busy[j % n] += 1

        copiers = min(self._copiers.threads, len(chunks))  # each takes every copiers-th chunk: the first ones first
        run_all(self._copiers.get(), [partial(copy_and_send, range(t, len(chunks), copiers)) for t in range(copiers)])

    def _collect(self, workers: list[WorkerProcess], busy: list[int]) -> Exception | None:
        """Every answer to the chunks sent; the first error a worker reported (its report read
        either way: the pipe stays in step)."""
        by_fd = {w.out: i for i, w in enumerate(workers)}
        error: Exception | None = None
        while any(busy):
            ready, _, _ = select.select([workers[i].out for i in range(len(workers)) if busy[i]], [], [])
            for fd in ready:
                index = by_fd[fd]
                status = self._read(workers[index], "running the ops of a batch")
                busy[index] -= 1
                if status == FAILED:
                    failure = self._failure(workers[index], "running the ops of a batch")
                    error = error or failure
                elif status != OK:
                    raise WorkerDiedError(f"{workers[index].name} sent an unknown status {status}")
        return error

    def _free_output(self) -> int:
        """An output slot nothing refers to (its batch is handed out as it is), else the spare
        (its batch is handed out as a copy: the caller keeps every batch)."""
        for index in range(_KEEP):
            if unreferenced(self._arrays, index):
                return index
        return _KEEP

    def _read(self, worker: WorkerProcess, doing: str) -> int:
        head = read_exact(worker.out, RESPONSE.size)
        if head is None:
            raise worker.died(doing, _ADVICE)
        return RESPONSE.unpack(head)[0]

    def _failure(self, worker: WorkerProcess, doing: str) -> Exception:
        ok, report = read_message(worker.out)
        if not ok:
            return worker.died(doing, _ADVICE)
        return rebuild_error(report, f"{worker.name} {doing}")


def _even_chunks(costs: np.ndarray, parts: int) -> list[range]:
    """``range(len(costs))`` cut into at most ``parts`` contiguous, non-empty chunks of about
    equal total cost."""
    total = np.cumsum(costs, dtype=np.float64)
    if not len(total):
        return []
    cuts = np.searchsorted(total, total[-1] * np.arange(1, parts) / parts, side="right")
    bounds = sorted({0, *cuts.tolist(), len(costs)})
    return [range(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
