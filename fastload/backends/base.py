"""What the Loader asks of a backend: turn planned batches of record indices into tensors."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..output import OutputSpec

__all__ = ["Backend", "BackendConfig", "BatchStream"]


@dataclass(frozen=True)
class BackendConfig:
    """Settings every backend honours. Checked by the Loader before a backend is built.

    Attributes:
        batch_size: the largest batch the backend will be given.
        device: "cpu" or "cuda" (where output tensors live).
        device_id: the CUDA device index (ignored on CPU).
        num_threads: decode/augment threads (DALI) or worker processes (torch).
        seed: base seed of the random augmentations.
        output_dtype: "float32", "float16" or "uint8" (uint8 skips normalization).
        layout: "NCHW" or "NHWC".
        prefetch: batches prepared ahead.
        verify: check record checksums on every read.
        channels: channels every image is brought to (grayscale expanded to RGB when 3).
        hw_decoder_load: share of JPEG decoding given to the GPU's hardware decoder (DALI's
            ``hw_decoder_load``, 0..1) where it has one; None keeps DALI's default.
        views: test-time views (fastload.tta): each batch is then ``(B, V, ...)``.
    """

    batch_size: int
    device: str = "cpu"
    device_id: int = 0
    num_threads: int = 2
    seed: int = 0
    output_dtype: str = "float32"
    layout: str = "NCHW"
    prefetch: int = 2
    verify: bool = True
    channels: int = 3
    hw_decoder_load: float | None = None
    views: tuple[Any, ...] = ()


class BatchStream(Protocol):
    """The batches of one pass, in order; ``close`` ends the pass early (a ``break``)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)``: ``images`` an ``output_dtype`` tensor in ``layout`` on ``device``
        (as ``output`` says), ``labels`` int64."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """A way to produce batches. Built once per Loader; one ``open_pass`` per pass over the data,
    several of which may be live at once (each is independent)."""

    #: what the batches become (fastload.output)
    output: OutputSpec
    #: where the backend adds the seconds of its stages (a fastload.stats.StageClock; the Loader
    #: replaces it with its stall meter's right after building the backend)
    clock: Any

    def open_pass(self, batches: Sequence[np.ndarray], epoch: int,
                  following: Callable[[int], Sequence[np.ndarray]] | None = None) -> BatchStream:
        """Start a pass over ``batches`` (record indices, in order) of ``epoch``: ``epoch``, the
        config's seed and each record index seed the random augmentations. A batch may be
        shorter than ``batch_size`` (the last one of an epoch). ``following(e)``: the batches of a
        later epoch ``e`` from its start, the passes expected next (a guess: a backend may start
        on them as this pass ends; the next pass may be another)."""
        ...

    def close(self) -> None:
        """Release worker processes and pipelines."""
        ...
