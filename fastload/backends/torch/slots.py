"""Output batches in shared memory, made once and reused by the torch backend's workers.

Why: a DataLoader worker returns each batch in a fresh shared-memory block, which the training
process maps and, when the next batch replaces it, frees. For a 64 x 3 x 224 x 224 float32 batch
(38 MB) freeing took ~2.8 ms of the iterating thread per batch (44 us an image, cProfile: the
previous batch dropped inside the loop, that is, in the user's own ``for`` statement), and the
worker paid the page faults of 9,400 new pages per batch on its side. Here the training process
makes a few blocks once, hands each task the number of a block no one uses (``take``: not in
flight, and ``fastload.output.unreferenced``: no tensor or view of it alive),
the worker writes the batch into it and returns only the number, and the training process hands
out a view of the block. When every block is in use (a caller keeping many batches), a task gets
no block and its worker makes a fresh one, as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...output import unreferenced

__all__ = ["BatchSlots"]


class BatchSlots:
    """``count`` shared-memory batches of ``shape`` and ``dtype``.

    Args:
        count: blocks (tasks in flight plus batches a caller keeps a little while).
        shape: a whole batch's shape (a shorter last batch uses the first rows).
        dtype: the batch's torch dtype.
    """

    def __init__(self, count: int, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self._tensors = [torch.empty(shape, dtype=dtype).share_memory_() for _ in range(count)]
        self._arrays = [t.numpy() for t in self._tensors]
        self._in_flight: set[int] = set()

    # --- pickling (spawned workers): the tensors cross as shared memory, the arrays are remade ---
    def __getstate__(self) -> dict[str, Any]:
        return {"tensors": self._tensors}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._tensors = state["tensors"]
        self._arrays = [t.numpy() for t in self._tensors]
        self._in_flight = set()

    # --- the training process ----------------------------------------------------------------
    def reset(self) -> None:
        """A new pass starts: the workers finished every task of the previous ones (a persistent
        DataLoader drains them before it asks its sampler for the next), so none is in flight."""
        self._in_flight.clear()

    def take(self) -> int:
        """A free block's number for the next task, or -1 when every block is in use."""
        for slot in range(len(self._arrays)):
            if slot not in self._in_flight and unreferenced(self._arrays, slot):
                self._in_flight.add(slot)
                return slot
        return -1

    def batch(self, slot: int, count: int) -> torch.Tensor:
        """The first ``count`` samples of block ``slot``, which a worker has written."""
        self._in_flight.discard(slot)
        return torch.from_numpy(self._arrays[slot][:count])

    # --- a worker ------------------------------------------------------------------------------
    def target(self, slot: int, count: int) -> np.ndarray:
        """Where a worker writes a batch of ``count`` samples for block ``slot``."""
        return self._arrays[slot][:count]
