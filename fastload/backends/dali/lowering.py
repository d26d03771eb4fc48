"""Ops onto DALI: the one place that decides what runs where and what fuses.

An op list splits in two. The **head** runs inside the DALI pipeline, with three fusions the ops
declare themselves (no type checks here):

* a leading op with a ``decoder_roi`` (RandomResizedCrop, RandomCrop) is fused into the decoder:
  only its window is decoded (``decoders.image_slice``), then ``after_roi`` (the resize, the padding) runs;
* trailing ops with ``cmn_args`` (CenterCrop's crop, then a horizontal Flip's mirror) fold into
  the final ``crop_mirror_normalize``, which also makes the output (``fastload.output``: the op
  list's trailing Normalize, the layout and dtype, 16-to-8-bit);
* every other op lowers itself (``op.dali``), reading its drawn parameters from the feed.

On the CPU, an op list of built-in ops and per-sample custom ops (any pixel type, any channels) ends at
the decoded images (only the crop windows for a leading random-resized crop) instead: every op runs in
the host stage (``fastload.backends.dali.host``) with the torch backend's code, several times
faster than DALI's CPU operators, custom ops in the same per-sample loop (no extra pass over the
batch); a batch op at the end runs in the tail stage on the host stage's batch.

The **tail** is a run of custom ops at the end (and a Normalize among them): it runs in the
tail stage (``fastload.backends.dali.tail``) on the whole device batch, outside
``fn.python_function``, and writes the output (the op list's trailing Normalize included). A
custom op followed by a built-in that only DALI can run stays in the head, through
``fn.python_function``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ops import Normalize, Op
from ...ops.base import Op as _BaseOp
from ...ops.custom import CustomOp
from ...output import OutputSpec, split_normalize
from ...tta import View, fixed_params, split_for_views
from .host import host_finishes, tail_input
from .params import ParamLayout, drawn_ahead

__all__ = ["LoweredOps", "LoweringContext", "lower_ops", "build_graph"]

# crop_mirror_normalize applies crop, then mirror, then normalization: the order ops must have.
# Its normalization is the output's (the op list's trailing Normalize): no op in the head takes it.
_CMN_ORDER = ("crop", "mirror")


@dataclass(frozen=True)
class LoweringContext:
    """What ops' ``dali()`` methods may read while the pipeline is defined.

    Attributes:
        device: "cpu" or "gpu": where the images DataNode lives.
        channels: channels per image.
        max_value: the pixel type's full-scale value (255, 65535, or 1.0 for floats).
        sample_ids: per-sample int64 ``[seed, epoch, record]`` DataNode (custom ops in DALI).
    """

    device: str
    channels: int
    max_value: float
    sample_ids: Any = None


def _declares(op: Op, method: str) -> bool:
    return getattr(type(op), method) is not getattr(_BaseOp, method)


@dataclass(frozen=True)
class LoweredOps:
    """An op list split for the DALI backend (see the module docstring).

    Attributes:
        head: ops run in DALI, in order (the op list's trailing Normalize is the output's).
        tail: ops run in the tail stage, on the device batch.
        output: the loader's output (made by the final operator, the host finish or the stage).
        params: where each head op's drawn parameters sit in the feed's vector.
        fuse_decoder: head[0] is cut by the decoder (encoded stores only).
        cmn: how many of the head's last ops fold into the final crop_mirror_normalize.
        views: test-time views; with them ``final_crop`` and the output run per view.
        host: the pipeline ends at the decoded images (a random-resized crop's windows); the host
            finish does the rest of the head (with a tail: into an HWC batch for the stage).
        host_draws: the host finish draws every head op's parameters itself (an op draws from a
            size that a custom op before it decides: ``params.drawn_ahead``); the feed draws none
            (``params`` is empty) and the images come whole.
    """

    head: tuple[Op, ...]
    tail: tuple[Op, ...]
    output: OutputSpec
    params: ParamLayout
    fuse_decoder: bool
    cmn: int
    views: tuple[View, ...] = ()
    final_crop: Op | None = None
    host: bool = False
    host_draws: bool = False
    needs_ids: bool = field(init=False)  # custom ops run inside DALI: samples carry [seed, epoch, record]

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs_ids", not self.host and any(isinstance(op, CustomOp) for op in self.head))


def _fuses(head: Sequence[Op], encoded: bool) -> bool:
    """The decoder cuts ``head``'s first op (a random-resized crop's window): encoded records only."""
    return bool(encoded and head and _declares(head[0], "decoder_roi"))


def _host_params(ops: Sequence[Op], encoded: bool) -> dict[str, Any]:
    """``LoweredOps`` fields for a head the host stage runs: the feed's draws and the decoder's cut
    where the feed can draw ahead, else none (the stage draws, from whole images)."""
    if drawn_ahead(ops):
        return {"params": ParamLayout(ops), "fuse_decoder": _fuses(ops, encoded)}
    return {"params": ParamLayout(()), "fuse_decoder": False, "host_draws": True}


def _tail_start(ops: Sequence[Op]) -> int:
    for i, op in enumerate(ops):
        if isinstance(op, CustomOp) and all(isinstance(o, (CustomOp, Normalize)) for o in ops[i:]):
            return i
    return len(ops)


def _cmn_count(head: Sequence[Op]) -> int:
    count, allowed = 0, len(_CMN_ORDER)
    for op in reversed(head):
        role = op.cmn_role()
        if role not in _CMN_ORDER:
            break
        rank = _CMN_ORDER.index(role)
        if rank >= allowed:
            break
        count, allowed = count + 1, rank
    return count


def lower_ops(ops: Sequence[Op], *, encoded: bool, output: OutputSpec, views: Sequence[View] = (),
              device: str = "gpu") -> LoweredOps:
    """Split ``ops`` into the DALI head and the batch-stage tail and decide the fusions.

    Args:
        ops: the loader's op list (a trailing Normalize is ``output``'s: it is dropped here).
        encoded: records reach DALI as encoded images (decoder fusion possible).
        output: the loader's output (uint8 output is not normalized, as in both backends).
        views: test-time views: the op list's final crop and the output then run per view.
        device: "cpu" or "gpu": where the pipeline runs (the host finish is for the CPU).
    """
    ops, _ = split_normalize(ops)
    if views:
        if _tail_start(ops) < len(ops):
            raise ValueError("test-time views and custom ops at the end of the augment list cannot be "
                             "combined yet; move the custom ops before the final crop")
        head, crop, _ = split_for_views(ops, views)
        # on the CPU the host stage cuts the views as the torch backend does (apply_view)
        host = host_finishes([*head, crop] if crop is not None else head, device=device,
                             pixel_dtype=output.pixel_dtype, channels=output.channels)
        drawn = _host_params(head, encoded) if host else \
            {"params": ParamLayout(head), "fuse_decoder": _fuses(head, encoded)}
        return LoweredOps(tuple(head), (), output, cmn=0, views=tuple(views), final_crop=crop, host=host, **drawn)
    pixels = {"device": device, "pixel_dtype": output.pixel_dtype, "channels": output.channels}
    if host_finishes(ops, **pixels):  # (a batch op needs the whole batch: not the host stage's)
        # every op, per-sample custom ops included, in the host stage: one pass, no tail
        return LoweredOps(tuple(ops), (), output, cmn=0, host=True, **_host_params(ops, encoded))
    cut = _tail_start(ops)
    head, tail = ops[:cut], ops[cut:]
    fuse = _fuses(head, encoded)
    if tail and not any(isinstance(op, CustomOp) for op in head) and host_finishes(head, **pixels) and \
            tail_input(head, output) is not None:
        # a batch op at the end: the tail stage runs the tail on the host stage's batch
        return LoweredOps(tuple(head), tuple(tail), output, cmn=0, host=True, **_host_params(head, encoded))
    cmn = _cmn_count(head[1:] if fuse else head) if not tail else 0
    return LoweredOps(tuple(head), tuple(tail), output, ParamLayout(head), fuse, cmn)


def _decode(data: Any, params: Any, lowered: LoweredOps, ctx: LoweringContext, pixel_dtype: np.dtype,
            hw_decoder_load: float | None, after_roi: bool = True) -> tuple[Any, int]:
    from nvidia.dali import fn, types

    device = "mixed" if ctx.device == "gpu" else "cpu"
    kind = types.RGB if ctx.channels == 3 else types.GRAY
    extra: dict[str, Any] = {"dtype": types.UINT16} if pixel_dtype == np.uint16 else {}
    if device == "mixed" and hw_decoder_load is not None:
        extra["hw_decoder_load"] = float(hw_decoder_load)
    if lowered.fuse_decoder:
        op = lowered.head[0]
        drawn = lowered.params.slice(params, 0)
        anchor, shape = op.decoder_roi(drawn)
        images = fn.decoders.image_slice(data, anchor, shape, axis_names="HW", normalized_anchor=False,
                                         normalized_shape=False, device=device, output_type=kind, **extra)
        return (op.after_roi(images, drawn, ctx) if after_roi else images), 1
    return fn.decoders.image(data, device=device, output_type=kind, **extra), 0


def _output(images: Any, output: OutputSpec, **kwargs: Any) -> Any:
    """The final crop_mirror_normalize: the fused crop/mirror (``kwargs``) and the output."""
    from nvidia.dali import fn, types

    args = output.dali_args()
    return fn.crop_mirror_normalize(images, **{**args, "dtype": getattr(types, args["dtype"])}, **kwargs)


def _finish(images: Any, params: Any, lowered: LoweredOps, ctx: LoweringContext) -> Any:
    """The final crop_mirror_normalize: fused ops, then the output."""
    kwargs: dict[str, Any] = {}
    first = len(lowered.head) - lowered.cmn
    for i in range(first, len(lowered.head)):
        kwargs.update(lowered.head[i].cmn_args(lowered.params.slice(params, i), ctx))
    return _output(images, lowered.output, **kwargs)


def _view(images: Any, view: View, lowered: LoweredOps, ctx: LoweringContext) -> Any:
    """One test-time view: its fixed op, the final crop at its position, mirror, the output."""
    from nvidia.dali import fn, types

    if view.op is not None:
        values = np.asarray(view.op.encode(fixed_params(view.op)), np.float32)
        images = view.op.dali(images, types.Constant(values) if values.size else None, ctx)
    if view.vflip:
        images = fn.flip(images, vertical=1, horizontal=0)
    kwargs: dict[str, Any] = {"mirror": int(view.mirror)}
    if lowered.final_crop is not None:
        kwargs.update(lowered.final_crop.cmn_args(None, ctx), crop_pos_y=view.crop_at[0], crop_pos_x=view.crop_at[1])
    return _output(images, lowered.output, **kwargs)


def _windows(data: Any, params: Any, lowered: LoweredOps, ctx: LoweringContext, encoded: bool,
             pixel_dtype: np.dtype) -> list[Any]:
    """For the host finish: the decoded images or crop windows (HWC, each its own size) and the
    parameters. Arrays pass through whole: the host finish cuts their windows as views (DALI's
    CPU slice kernel took 39% of the CPU time per image of a raw store, perf; a view costs nothing)."""
    if encoded:
        images, _ = _decode(data, params, lowered, ctx, pixel_dtype, None, after_roi=False)
    else:
        images = data
    return [images] if params is None else [images, params]


def build_graph(data: Any, params: Any, lowered: LoweredOps, ctx: LoweringContext, *, encoded: bool,
                pixel_dtype: np.dtype, hw_decoder_load: float | None = None) -> Any:
    """The images DataNode: decode (or take the arrays), the head's ops, the final stage.

    With a tail, the pipeline ends in HWC images of the last head op's type: the tail stage
    takes it from there. With test-time views, a list of one DataNode per view. For the host
    finish, ``[images, params]`` (``[images]`` when no op draws parameters).
    """
    if lowered.host:
        return _windows(data, params, lowered, ctx, encoded, pixel_dtype)
    if encoded:
        images, start = _decode(data, params, lowered, ctx, pixel_dtype, hw_decoder_load)
    else:
        images, start = (data.gpu() if ctx.device == "gpu" else data), 0
    end = len(lowered.head) - lowered.cmn
    for i in range(start, end):
        images = lowered.head[i].dali(images, lowered.params.slice(params, i), ctx)
    if lowered.views:
        return [_view(images, view, lowered, ctx) for view in lowered.views]
    if lowered.tail:
        return images
    return _finish(images, params, lowered, ctx)
