"""One DALI pipeline and its feed: runs the planned batches of one pass at a time.

The pipeline's input is a batch-mode ``fn.external_source`` whose callback runs in the Loader's
thread and does O(1) work per batch: it hands the next planned batch to a feed worker and takes
a filled shared-memory slot back as zero-copy views (``no_copy=True``). Labels never enter DALI:
the plan knows them. Outputs reach torch through DLPack, without a copy, on torch's current
stream on the GPU.

Arrays for the CPU host stage (a raw store, ``.npy`` records) leave DALI nothing to do: no
pipeline is built, and the host stage reads them from the slot in place.

A pass broken off early (a ``break``, a peek) is not rebuilt: when the next pass begins, its
first batches go to the workers at once, the pipeline drains the few batches it had prefetched,
resets, and goes on.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...errors import FastloadError, WorkerDiedError, WorkerError
from ...ops.base import Op
from ...ops.custom import CustomOp
from ...stats import StageClock
from ...stores import Store
from ...stores.files import FileStore
from ...workers.slots import align
from ..base import BackendConfig
from .feed import (
    SPAN,
    FeedSpec,
    dense_batch,
    feeds_windows,
    record_nbytes,
    record_shapes,
    slot_layout,
)
from .host import HostFinish, tail_input
from .host_pool import host_pool
from .lowering import LoweredOps, LoweringContext, build_graph
from .params import UnknownSize
from .pool import FeedPool
from .share import background, new_threads_clock, thread_names

__all__ = ["DaliEngine", "PipelineError", "UnknownSize"]

_RELEASE_LAG = 2  # iterations a slot stays untouched after its batch's output came back
# In a forked child (a torch DataLoader worker, say), pipelines inherited from the parent are kept
# here, never shut down: their threads are not in the child, so Shutdown() would wait forever.
_DISOWNED: list[Any] = []


def _disown_pipelines() -> None:
    from nvidia.dali import Pipeline

    for ref in list(getattr(Pipeline, "_pipes", ())):
        pipe = ref()
        if pipe is not None and getattr(pipe, "_pipe", None) is not None:
            _DISOWNED.append(pipe._pipe)
            pipe._pipe = None


def _collect_pipeline_garbage() -> None:
    """Before a fork: free unreachable pipelines here, where their threads are. In the child, a
    garbage collection that runs during Python's own after-fork work (``threading._after_fork``
    runs before ``_disown_pipelines``) would shut such a pipeline down and hang the child (seen:
    a torch DataLoader worker forked after a DALI loader's pipeline became garbage)."""
    dali = sys.modules.get("nvidia.dali.pipeline")
    if dali is not None and getattr(dali.Pipeline, "_pipes", None):
        gc.collect()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_collect_pipeline_garbage, after_in_child=_disown_pipelines)


class _Source:
    """The external source's callback; refers to its engine weakly, so that dropping a Loader
    frees its pipeline at once instead of leaving a cycle for the garbage collector."""

    def __init__(self, engine: DaliEngine) -> None:
        self._engine = weakref.ref(engine)

    def __call__(self) -> tuple[Any, ...]:
        engine = self._engine()
        if engine is None:
            raise StopIteration
        return engine._source()


class PipelineError(FastloadError, RuntimeError):
    """DALI failed on a batch (the message names the batch's records and DALI's reason)."""


def _feed_ops(head: Sequence[Op]) -> tuple[dict[str, Any], ...]:
    return tuple((UnknownSize() if isinstance(op, CustomOp) else op).to_config() for op in head)


def _host_finish(lowered: LoweredOps, whole: bool, config: BackendConfig) -> HostFinish:
    """The host finish of the head (``whole``: the images come whole, neither DALI's decoder nor
    the feed cut the first op's window, so it does); with a tail, into the batch the tail stage
    takes from it."""
    output = tail_input(lowered.head, lowered.output) if lowered.tail else lowered.output
    return HostFinish(lowered.head, None if lowered.host_draws else lowered.params, cut=whole,
                      threads=config.num_threads, output=output,
                      seed=config.seed, views=lowered.views, final_crop=lowered.final_crop)  # type: ignore[arg-type]


class DaliEngine:
    """A built DALI pipeline, its feed workers, and the state of the pass it is running.

    Args:
        store: the store to read.
        lowered: the op list, split and fused for DALI.
        config: the backend settings.
        encoded: records reach DALI encoded (else as decoded arrays).
        pixel_dtype: the images' pixel type.
        feed_workers: feed processes.
        host_workers: processes that run the host stage (0: its threads).
    """

    def __init__(self, store: Store, lowered: LoweredOps, config: BackendConfig, *, encoded: bool,
                 pixel_dtype: np.dtype, feed_workers: int, host_workers: int = 0) -> None:
        self.store, self.lowered, self.config = store, lowered, config
        self.encoded, self.pixel_dtype = encoded, np.dtype(pixel_dtype)
        self.labels = np.asarray(store.labels, np.int64)
        self.shapes = record_shapes(store)
        if encoded:
            self.sizes = align(record_nbytes(store))
        else:
            self.shapes[:, 2] = np.where(self.shapes[:, 2] == 1, config.channels, self.shapes[:, 2])
            self.sizes = align(self.shapes.prod(axis=1) * self.pixel_dtype.itemsize)
        self.gpu = config.device == "cuda"
        self.device = torch.device("cuda", config.device_id) if self.gpu else torch.device("cpu")
        self.ahead = max(2, 2 * feed_workers)
        windows = bool(lowered.head) and not lowered.host_draws and \
            feeds_windows(lowered.head[0], host=lowered.host, encoded=encoded)
        files = store.files  # image files read in place: the workers read them, not a store
        paths, options = store.reopen_args()  # how a worker opens the store itself
        spec = FeedSpec(paths=() if files else tuple(paths), options={} if files else options,
                        mode="encoded" if encoded else "arrays", verify=config.verify, seed=config.seed,
                        ops=() if lowered.host_draws else _feed_ops(lowered.head),  # (): it draws nothing
                        pixel_dtype=self.pixel_dtype.name, channels=config.channels,
                        files=tuple(files or ()), shapes=tuple(map(tuple, self.shapes.tolist())) if files else (),
                        windows=windows)
        self.host = _host_finish(lowered, not (lowered.fuse_decoder or windows), config) if lowered.host else None
        if self.host is not None and host_workers:
            self.host = host_pool(self.host, host_workers, config.batch_size, store.path)
        # arrays for the CPU host stage: DALI has nothing to decode and no op to run, it would only copy
        # them through (its threads' memmove: ~9% of the CPU on a 6-channel raw store, perf); the host
        # stage takes them from the feed's slots instead, and no pipeline is built
        bypass = self.host is not None and not encoded and not self.gpu
        # a host stage after DALI takes each batch on the share of its threads that its share of the
        # CPU needs (fastload.backends.dali.share): one batch more in DALI's queue keeps DALI's threads
        # decoding while a batch waits for it (2 cores, one host thread: eval list 976 img/s at depth
        # 2, 1111 at 3; train preset 1489 and 1514; RESULTS.md section 23)
        shared = self.host is not None and not bypass
        self.depth = max(1, config.prefetch) + shared
        self.pool = FeedPool(spec, feed_workers, self.depth + 1 + _RELEASE_LAG + self.ahead, store.path)
        before = thread_names() if shared else {}
        self.pipe = None if bypass else self._define()
        if self.pipe is not None:
            self.pipe.build()
        if shared:  # against DALI's threads (those this pipeline starts), which run as background work
            self.host.share_with(new_threads_clock(before, "[DALI]", on_found=background))  # type: ignore[union-attr]
        self.broken = False
        self.owner: Any = None  # a weak reference to the pass running on this engine
        self.clock = StageClock()  # the backend hands the Loader's (the stall meter, fastload.stats)
        self._seq = itertools.count()
        self._arm([], 0)
        self._dirty = False

    # --- the pipeline -------------------------------------------------------------------------
    def _define(self) -> Any:
        from nvidia.dali import fn, pipeline_def, types

        # The definition captures plain values, never the engine: the pipeline must not keep it alive.
        cfg, lowered, encoded, pixel_dtype = self.config, self.lowered, self.encoded, self.pixel_dtype
        source, with_params = _Source(self), lowered.params.size > 0
        ctx = LoweringContext(device="gpu" if self.gpu else "cpu", channels=cfg.channels,
                              max_value=lowered.output.max_value)
        pixel = {np.dtype("uint8"): types.UINT8, np.dtype("uint16"): types.UINT16, np.dtype("int16"): types.INT16,
                 np.dtype("int32"): types.INT32, np.dtype("uint32"): types.UINT32,
                 np.dtype("float32"): types.FLOAT}[pixel_dtype]  # every type a store may hold (ARRAY_DTYPES)
        dtypes = [types.UINT8 if encoded else pixel] + [types.FLOAT] * with_params + [types.INT64] * lowered.needs_ids
        # no layout given to the source: DALI would then check every sample's shape against it on
        # every batch, in Python; the tensor lists the callback makes carry their layout themselves
        layouts = None
        depth = self.depth

        @pipeline_def(batch_size=cfg.batch_size, num_threads=max(1, cfg.num_threads),
                      device_id=cfg.device_id if self.gpu else None, seed=cfg.seed, exec_dynamic=True,
                      prefetch_queue_depth=depth)
        def pipeline():
            outputs = fn.external_source(source=source, num_outputs=len(dtypes), batch=True, no_copy=True,
                                         dtype=dtypes, layout=layouts)
            data, rest = outputs[0], list(outputs[1:])
            params = rest.pop(0) if with_params else None
            ids = rest.pop(0) if lowered.needs_ids else None
            images = build_graph(data, params, lowered, LoweringContext(**{**ctx.__dict__, "sample_ids": ids}),
                                 encoded=encoded, pixel_dtype=pixel_dtype, hw_decoder_load=cfg.hw_decoder_load)
            return tuple(images) if isinstance(images, list) else images

        return pipeline()

    # --- feeding (called by DALI, in the Loader's thread) -----------------------------------------
    def _arm(self, batches: Sequence[np.ndarray], epoch: int) -> None:
        self._batches, self._epoch = list(batches), epoch
        self._submitted = self._fed = self._out = 0
        self._inflight: deque[int] = deque()  # seqs of submitted batches, in order
        self._in_dali: deque[tuple[int, int]] = deque()  # (position, slot) fed to DALI
        self._stopping = False

    def _slot_bytes(self, batch: np.ndarray) -> int:
        return slot_layout(len(batch), self.lowered.params.size)[1] + int(self.sizes[batch].sum())

    def _top_up(self) -> None:
        while (self._submitted < len(self._batches) and len(self._inflight) < self.ahead
               and self.pool.free_slots):
            batch = self._batches[self._submitted]
            seq = next(self._seq)
            self.pool.submit(seq, self._epoch, batch, self._slot_bytes(batch))
            self._inflight.append(seq)
            self._submitted += 1

    def _payloads(self, slot: int, batch: np.ndarray) -> tuple[Any, np.ndarray]:
        """The slot's payloads as NumPy views (one dense ``NxHxWxC`` array for arrays of one shape,
        else a list of HWC arrays or of encoded bytes) and the ``(N, k)`` parameters."""
        count, k = len(batch), self.lowered.params.size
        view = self.pool.view(slot)
        params_at, data_at = slot_layout(count, k)
        spans = np.frombuffer(view, np.int64, SPAN * count, 0).reshape(count, SPAN)
        params = np.frombuffer(view, np.float32, count * k, params_at).reshape(count, k)
        data = np.frombuffer(view, np.uint8, len(view) - data_at, data_at)
        shapes = self.shapes[batch]
        if not self.encoded:  # the arrays as the feed wrote them (windows: each its own size)
            shapes = np.column_stack([spans[:, 2:4], shapes[:, 2]])
        if dense_batch("encoded" if self.encoded else "arrays", shapes):  # one contiguous block
            size = int(spans[-1, :2].sum())
            return data[:size].view(self.pixel_dtype).reshape(count, *shapes[0].tolist()), params
        if self.encoded:
            return [data[s : s + n] for s, n in spans[:, :2].tolist()], params
        return [data[s : s + n].view(self.pixel_dtype).reshape(shape)
                for (s, n), shape in zip(spans[:, :2].tolist(), shapes.tolist())], params

    def _views(self, slot: int, batch: np.ndarray) -> tuple[Any, ...]:
        """The external source's outputs for the batch in ``slot``: zero-copy views of it."""
        from nvidia.dali.tensors import TensorCPU, TensorListCPU

        payloads, params = self._payloads(slot, batch)
        count, k = params.shape
        if isinstance(payloads, np.ndarray):
            out: list[Any] = [TensorListCPU(payloads, "HWC")]
        else:
            out = [TensorListCPU([TensorCPU(x) for x in payloads], "" if self.encoded else "HWC", contiguous=False)]
        if k:
            out.append(params)
        if self.lowered.needs_ids:
            ids = np.stack([np.full(count, self.config.seed), np.full(count, self._epoch), batch], axis=1)
            out.append(ids.astype(np.int64))
        return tuple(out)

    def _take(self) -> tuple[int, int]:
        """The next filled slot and its batch's position in the pass; StopIteration at its end."""
        if self._stopping or self._fed >= len(self._batches):
            raise StopIteration
        self._top_up()
        waited = time.perf_counter()
        slot, _ = self.pool.wait(self._inflight.popleft())
        self.clock.add("feed", time.perf_counter() - waited)
        position = self._fed
        self._fed += 1
        self._in_dali.append((position, slot))
        self._top_up()
        return slot, position

    def _source(self) -> tuple[Any, ...]:
        slot, position = self._take()
        return self._views(slot, self._batches[position])

    def _release(self, before: int) -> None:
        """Give back the slots of the batches before position ``before``."""
        while self._in_dali and self._in_dali[0][0] < before:
            self.pool.release(self._in_dali.popleft()[1])

    # --- passes -------------------------------------------------------------------------------------
    def begin(self, batches: Sequence[np.ndarray], epoch: int) -> None:
        """Start a pass over ``batches`` of ``epoch``: the first batches go to the workers now,
        then the pipeline drops what it prefetched for an unfinished previous pass."""
        for seq in self._inflight:
            self.pool.discard(seq)
        held = self._in_dali
        self._arm(batches, epoch)
        self._top_up()
        if self._dirty and self.pipe is not None:
            self._stopping = True
            try:
                while True:
                    self.pipe.run()
            except StopIteration:
                pass
            finally:
                self._stopping = False
            self.pipe.reset()
        for _, slot in held:
            self.pool.release(slot)
        self._dirty = True

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of the pass as ``(images, labels)`` torch tensors on the device."""
        if self.pipe is None:
            return self._next_from_slots()
        clock = self.clock
        fed_before, started = clock.seconds["feed"], time.perf_counter()
        try:
            stream = torch.cuda.current_stream(self.device).cuda_stream if self.gpu else None
            outputs = self.pipe.run(stream) if self.gpu else self.pipe.run()
        except StopIteration:
            self.pipe.reset()
            self._dirty = False
            self._release(len(self._batches))
            raise
        except FastloadError:
            self.broken = True
            raise
        except Exception as exc:
            self.broken = True
            batch = self._batches[self._out] if self._out < len(self._batches) else []
            raise self._failure([int(i) for i in batch], exc) from exc
        # run() fed DALI from this thread (the feed's wait is timed in _source): the rest is DALI's
        clock.add("decode_ops", max(0.0, time.perf_counter() - started - (clock.seconds["feed"] - fed_before)))
        position = self._out
        self._out += 1
        self._release(position - _RELEASE_LAG + 1)
        records = self._batches[position]
        labels = torch.from_numpy(self.labels[records])
        if self.host is not None:  # DALI decoded the images (or crop windows): the host finish does the rest
            params = np.asarray(outputs[1].as_tensor()) if len(outputs) > 1 else np.zeros((len(records), 0))
            return self._on_host(outputs[0], params, records), labels
        if not outputs[0].is_dense_tensor():  # images that differ in size: only a tail can mend that
            if not self.lowered.tail:
                self.broken = True
                raise PipelineError(f"{self.store.path}: the augmented images of records {[int(i) for i in records]} "
                                    "differ in size; end the augment list with a fixed-size op (RandomResizedCrop, "
                                    "CenterCrop, Resize(size=...))")
            return [torch.from_dlpack(outputs[0][i]) for i in range(len(records))], labels.to(self.device)
        views = [torch.from_dlpack(out.as_tensor()) for out in outputs]
        images = torch.stack(views, dim=1) if self.lowered.views else views[0]
        if self.gpu:
            labels = labels.to(self.device, non_blocking=True)
        return images, labels

    def _next_from_slots(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``next`` without a pipeline: the host stage runs on the slot's arrays in place."""
        try:
            slot, position = self._take()
        except StopIteration:
            self._dirty = False
            self._release(len(self._batches))
            raise
        except BaseException:  # a feed worker's error (it names the record): as from a pipeline's run
            self.broken = True
            raise
        self._out += 1
        records = self._batches[position]
        images, params = self._payloads(slot, records)
        try:
            return self._on_host(images, params, records), torch.from_numpy(self.labels[records])
        finally:
            self._release(position + 1)  # the batch is written into the host stage's own memory

    def _on_host(self, images: Any, params: np.ndarray, records: np.ndarray) -> torch.Tensor:
        """The host stage's batch from ``images`` (DALI's output, or the slot's arrays)."""
        try:
            with self.clock.span("host_finish"):
                return self.host(images, params, self._epoch, records)  # type: ignore[misc]
        except WorkerDiedError:  # a host worker died: its pool cannot go on
            self.broken = True
            raise
        except FastloadError as exc:  # a custom op's error names the op and the record already
            if not isinstance(exc, WorkerError):  # (a library's error from a host worker does not)
                raise
            raise PipelineError(f"{self.store.path}: the CPU host stage failed on the batch of records "
                                f"{[int(i) for i in records]}: {exc}") from exc
        except Exception as exc:  # an op that fails on a sample: name the batch, keep the cause
            raise PipelineError(f"{self.store.path}: the CPU host stage failed on the batch of records "
                                f"{[int(i) for i in records]}: {type(exc).__name__}: {exc}") from exc

    def _failure(self, records: list[int], exc: BaseException) -> PipelineError:
        """The error for a batch DALI failed on. DALI's message names no sample, so the batch's
        records go through fastload's own decoder: those it refuses too are named, with why."""
        refused = []
        for record in records:
            try:
                self.store.decode(record)
            except FastloadError as error:
                refused.append(str(error))
        if isinstance(self.store, FileStore):
            remedy = ("remove or replace the file, or pack the folder ('fastload pack' checks every image "
                      "and leaves out those that do not decode)")
        else:
            remedy = f"'fastload verify {self.store.path}' lists every damaged record"
        where = f"{self.store.path}: DALI failed on the batch of records {records}"
        if refused:
            return PipelineError(f"{where}: {'; '.join(refused)}; {remedy}")
        return PipelineError(f"{where}: {exc}. If a record is damaged, {remedy}")

    def close(self) -> None:
        self.pipe = None
        self.pool.close()
        if self.host is not None:
            self.host.close()
