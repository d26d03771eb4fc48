"""Random augmentation parameters, drawn per sample in the feed, read by the DALI lowering.

Both backends draw an op list's parameters the same way: one generator per sample, seeded from
``[seed, epoch, record]``, each op's ``draw`` in turn on the image size that op sees. The torch
backend applies them with NumPy; for the DALI backend the feed packs them into one float32
vector per sample (``ParamLayout``), and each op's lowering reads its own slice of it. So the
DALI backend's crops, flips and colour changes are the torch backend's, never replayed across
epochs, and identical for a resumed run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...ops.base import Op, guarded, register, sample_rng

__all__ = ["ParamLayout", "UnknownSize", "drawn_ahead"]


@register
@dataclass(frozen=True)
class UnknownSize(Op):
    """Stands in the feed for a custom op DALI runs: it draws nothing, and the size after it is
    not known ahead (so the feed's parameter draws match the torch backend's)."""

    def output_size(self, height: int, width: int) -> None:
        return None



def drawn_ahead(ops: Sequence[Op]) -> bool:
    """Whether the feed can draw every op's parameters before the images are decoded: no op that
    draws from the image size follows one whose output size is not known ahead (a custom op).
    Where it cannot, the CPU's host stage draws them itself (``HostFinish(params=None)``); DALI's
    operators (the GPU) need them from the feed."""
    return _undrawable(ops) is None


def _undrawable(ops: Sequence[Op]) -> Op | None:
    """The first op that draws from a size not known ahead (None: every op can be drawn ahead)."""
    sized = True
    for op in ops:
        if op.draw_needs_size and not sized:
            return op
        sized = sized and op.output_size(1, 1) is not None
    return None


class ParamLayout:
    """Where each op's parameters sit in the per-sample vector, and how they are drawn.

    Args:
        ops: the ops the DALI pipeline runs, in order.

    Raises:
        ValueError: an op whose draw needs the image size follows one whose output size cannot
            be known ahead (a custom op): the feed could not draw it.
    """

    def __init__(self, ops: Sequence[Op]) -> None:
        self.ops = list(ops)
        first = _undrawable(self.ops)
        if first is not None:
            raise ValueError(
                f"{type(first).__name__} draws from the image size, but an op before it can change the size in "
                "ways fastload cannot know ahead (a custom op): DALI's operators (on the GPU) need its draws "
                "before decoding; put the custom op after it (on the CPU the host stage draws it itself)")
        self.offsets: list[int] = []
        size = 0
        for op in self.ops:
            self.offsets.append(size)
            size += op.param_count
        self.size = size

    def slice(self, params: object, index: int) -> object | None:
        """Op ``index``'s part of the per-sample parameter DataNode (None when it has none)."""
        count = self.ops[index].param_count
        if not count:
            return None
        start = self.offsets[index]
        return params[start : start + count]  # type: ignore[index]

    def draw(self, seed: int, epoch: int, index: int, height: int, width: int) -> np.ndarray:
        """Record ``index``'s parameter vector for ``epoch``, for an image of ``height x width``."""
        out = np.zeros(self.size, np.float32)
        if not self.size:
            return out
        rng = sample_rng(seed, epoch, index)
        size: tuple[int, int] | None = (height, width)
        for op, start in zip(self.ops, self.offsets):
            h, w = size if size is not None else (0, 0)
            try:
                params = op.draw(rng, h, w)
                if op.param_count:
                    out[start : start + op.param_count] = op.encode(params)
            except Exception as exc:
                raise guarded(op, rng, exc) from exc
            size = op.output_size(h, w) if size is not None else None
        return out

    def draw_batch(self, seed: int, epoch: int, indices: Sequence[int], shapes: np.ndarray) -> np.ndarray:
        """``(len(indices), size)`` float32: every sample's vector (``shapes``: HxW per sample)."""
        out = np.zeros((len(indices), self.size), np.float32)
        if self.size:
            for row, (index, shape) in enumerate(zip(indices, shapes)):
                out[row] = self.draw(seed, epoch, int(index), int(shape[0]), int(shape[1]))
        return out
