"""The DALI backend: batches of a store through DALI pipelines (``fastload.backends.dali``).

DALI decodes (nvJPEG on the GPU, libjpeg-turbo on the CPU) and augments; feed worker processes
read, check and lay out the records; the Loader's thread does O(1) Python work per batch.
Every store fastload writes is read: encoded JPEG/PNG/... records go to DALI's decoders, and
records those cannot read (``.npy`` arrays, 6-channel TIFFs, float pixels) are decoded by the
feed workers and enter the pipeline as arrays, as raw stores' records do.

Each pass over the data runs on an engine (a pipeline and its workers). Passes run one after
another on the same engine; a second pass started while one is still live (two iterators at
once) gets an engine of its own.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..._optional import require
from ...ops import Op
from ...output import OutputSpec, split_normalize
from ...pixels import pixel_dtype
from ...stats import StageClock
from ...stores import Store
from ...workers import default_workers
from ..base import BackendConfig
from .engine import DaliEngine
from .lowering import LoweredOps, lower_ops
from .tail import TailStage

__all__ = ["DaliBackend", "dali_decodes", "default_feed_workers"]


def _dali() -> Any:
    return require("nvidia.dali", "cuda13", "backend='dali'", package="nvidia-dali")


# Encodings and pixel types DALI's decoders read as fastload's decode policy does. Others (.npy
# arrays, TIFF pages, GIF frames, JPEG 2000 with a DICOM policy, signed or float pixels) are
# decoded by the feed workers with fastload's own decoder.
_DALI_ENCODINGS = {"jpeg", "png", "bmp", "webp"}
_DALI_DTYPES = {"uint8", "uint16"}


def dali_decodes(store: Store) -> bool:
    """Whether DALI's image decoders read every record of an encoded store as fastload's decode
    policy does (JPEG/PNG/BMP/WebP, 8 or 16 bits, 1 or 3 channels)."""
    return all(s.header.payload != "raw" and set(s.header.encodings) <= _DALI_ENCODINGS
               and set(s.header.dtypes) <= _DALI_DTYPES and s.header.channels in (1, 3) for s in store.shards)


def default_feed_workers(decodes: bool = False) -> int:
    """Feed processes: one per four cores, 1 to 4 (a record costs them tens of microseconds); one
    per two cores, 2 to 8, where they decode the records themselves (``.npy`` arrays, TIFFs DALI
    cannot read: milliseconds each; 6-channel 512 px arrays on 2 cores, 2 workers instead of 1:
    265 -> 317 img/s)."""
    if decodes:
        return max(2, min(8, default_workers() // 2))
    return max(1, min(4, default_workers() // 4))


class _DaliPass:
    """One pass: the batches of one epoch, on an engine.

    When a newer pass starts and no engine is idle, it takes this pass's engine (as a persistent
    DataLoader resets its iterator) instead of building another: iterators that are dropped
    without being closed (``it = iter(loader)`` again) cost nothing. If this pass is used again
    afterwards, it gets an engine of its own and goes on from its next batch: several live
    iterators stay independent.
    """

    def __init__(self, backend: DaliBackend, batches: Sequence[np.ndarray], epoch: int) -> None:
        self._backend, self._batches, self._epoch = backend, list(batches), epoch
        self._engine: DaliEngine | None = None
        self._done = 0
        self._closed = False

    def __iter__(self) -> _DaliPass:
        return self

    def _attach(self, engine: DaliEngine) -> None:
        engine.begin(self._batches[self._done :], self._epoch)
        engine.owner = weakref.ref(self)
        self._engine = engine

    def _lose_engine(self) -> DaliEngine | None:
        engine, self._engine = self._engine, None
        return engine

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._closed or self._done >= len(self._batches):
            self.close()
            raise StopIteration
        try:
            if self._engine is None:  # a newer pass took the engine: get another, go on
                self._attach(self._backend._engine(steal=False))
            images, labels = self._engine.next()  # type: ignore[union-attr]
            if self._backend.tail_stage is not None:  # custom ops at the end: they write the output
                backend = self._backend
                clock = backend.clock
                on_gpu = backend.config.device == "cuda"
                with clock.gpu_span("decode_ops", backend.config.device_id) if on_gpu else clock.span("decode_ops"):
                    images = self._backend.tail_stage(images, self._epoch, self._batches[self._done])
        except BaseException:  # the stream moved on: a later batch must not take this one's place
            self.close()
            raise
        self._done += 1
        return images, labels

    def close(self) -> None:
        self._closed = True
        engine = self._lose_engine()
        if engine is not None:
            self._backend._give_back(engine)


class DaliBackend:
    """Batches from a store through DALI (GPU when ``config.device == "cuda"``).

    Args:
        store: the store to read.
        ops: the loader's op list.
        config: the backend settings.
        feed_workers: feed processes per engine (default: one per four cores, 1 to 4).
        host_workers: on the CPU, processes that run the host stage's ops (0: threads;
            ``fastload.backends.dali.host_pool``).
    """

    def __init__(self, store: Store, ops: Sequence[Op], config: BackendConfig,
                 feed_workers: int | None = None, host_workers: int = 0) -> None:
        _dali()
        self.store, self.config = store, config
        self.encoded = dali_decodes(store)
        self.pixel_dtype = pixel_dtype(store)
        output = OutputSpec(dtype=config.output_dtype, layout=config.layout, channels=config.channels,
                            pixel_dtype=self.pixel_dtype, normalize=split_normalize(ops)[1])
        self.lowered: LoweredOps = lower_ops(ops, encoded=self.encoded, output=output, views=config.views,
                                             device="gpu" if config.device == "cuda" else "cpu")
        decodes = not self.encoded and not all(s.header.payload == "raw" for s in store.shards)
        self.feed_workers = feed_workers or default_feed_workers(decodes)
        self.host_workers = host_workers
        if host_workers and not self.lowered.host:
            where = "on the GPU DALI runs the ops" if config.device == "cuda" else "DALI's operators run this op list"
            warnings.warn(f"host_workers={host_workers} has no effect: {where} (there is no host stage)", stacklevel=2)
        self.tail_stage = TailStage(tail=self.lowered.tail, seed=config.seed, output=output,
                                    threads=config.num_threads) if self.lowered.tail else None
        self._idle: list[DaliEngine] = []
        self._engines: list[DaliEngine] = []
        self.clock = StageClock()  # the Loader hands its stall meter's clock (fastload.stats)

    @property
    def output(self) -> OutputSpec:
        """What the batches become (made in DALI, the host stage, or the tail stage with a tail)."""
        return self.lowered.output

    @property
    def tail(self) -> tuple[Op, ...]:
        """Ops the tail stage runs on each batch (custom ops at the end of the list)."""
        return self.lowered.tail

    def _engine(self, steal: bool) -> DaliEngine:
        """An idle engine; else (``steal``) the engine of the newest live pass; else a new one."""
        if self._idle:
            engine = self._idle.pop()
            engine.clock = self.clock
            return engine
        if steal:
            for engine in reversed(self._engines):
                owner = engine.owner() if engine.owner is not None else None
                if owner is not None and owner._engine is engine:
                    owner._lose_engine()
                    engine.clock = self.clock
                    return engine
        engine = DaliEngine(self.store, self.lowered, self.config, encoded=self.encoded,
                            pixel_dtype=self.pixel_dtype, feed_workers=self.feed_workers,
                            host_workers=self.host_workers)
        engine.clock = self.clock
        self._engines.append(engine)
        return engine

    def _give_back(self, engine: DaliEngine) -> None:
        engine.owner = None
        if engine.broken or self._engines is None:
            engine.close()
            if self._engines is not None and engine in self._engines:
                self._engines.remove(engine)
        else:
            self._idle.append(engine)

    def open_pass(self, batches: Sequence[np.ndarray], epoch: int,
                  following: Callable[[int], Sequence[np.ndarray]] | None = None) -> _DaliPass:
        """Start a pass over ``batches`` (record indices) of ``epoch``. ``following`` is not used:
        DALI's feed idles little at an epoch's end (its per-sample tasks spread over the workers;
        a 200-image epoch ran at 97% of a 1,000-image one's rate where the torch backend's ran at
        71%), and feeding the next epoch ahead was not faster (2 cores)."""
        stream = _DaliPass(self, batches, epoch)
        engine = self._engine(steal=True)
        try:
            stream._attach(engine)
        except BaseException:
            engine.broken = True
            self._give_back(engine)
            raise
        return stream

    def close(self) -> None:
        if self.tail_stage is not None:
            self.tail_stage.close()
        engines, self._engines, self._idle = self._engines, None, []
        for engine in engines or []:
            engine.close()
