"""Test-time augmentation: several deterministic views of each image, ``(B, V, C, H, W)`` batches.

A view changes how the op list ends. The op list's last crop (the eval preset's CenterCrop) is
cut at the view's position, and the view may mirror, flip or apply one fixed op first:

    identity    the op list as it is
    hflip       mirrored left-right
    vflip       flipped upside down
    five-crop   the four corners and the centre (torchvision's FiveCrop order)
    ten-crop    five-crop, then five-crop of the mirrored image (torchvision's TenCrop order)
    an op       a fixed op, e.g. Rotate(max_degrees=(10, 10)), before the final crop

In GPU DALI pipelines the views are branches of one graph; on the CPU the DALI backend's host
stage cuts them with ``apply_view`` as the torch backend's workers do (the same pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .ops import CenterCrop, Normalize, Op
from .output import split_normalize

__all__ = ["View", "NAMED_VIEWS", "resolve_views", "split_for_views", "fixed_params", "apply_view"]

_CENTRE = (0.5, 0.5)
_FIVE = ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0), _CENTRE)  # tl, tr, bl, br, centre


@dataclass(frozen=True)
class View:
    """One test-time view.

    Attributes:
        crop_at: (y, x) position of the final crop window, 0..1 (0.5: centred).
        mirror: mirror left-right after cropping.
        vflip: flip upside down before cropping.
        op: a fixed op applied before the final crop.
        name: how the view is shown.
    """

    crop_at: tuple[float, float] = _CENTRE
    mirror: bool = False
    vflip: bool = False
    op: Op | None = None
    name: str = "identity"


def _ten() -> list[View]:
    # TenCrop's second half crops the mirrored image: its top-left is the original's top-right.
    mirrored = [View((y, 1.0 - x), mirror=True, name=f"hflip-crop{i}") for i, (y, x) in enumerate(_FIVE)]
    return [View(at, name=f"crop{i}") for i, at in enumerate(_FIVE)] + mirrored


NAMED_VIEWS = {
    "identity": lambda: [View()],
    "hflip": lambda: [View(mirror=True, name="hflip")],
    "vflip": lambda: [View(vflip=True, name="vflip")],
    "five-crop": lambda: [View(at, name=f"crop{i}") for i, at in enumerate(_FIVE)],
    "ten-crop": _ten,
}


def fixed_params(op: Op) -> Any:
    """The op's parameters when it draws the same ones every time; else a ValueError."""
    a = op.draw(np.random.default_rng(1), 64, 64)
    b = op.draw(np.random.default_rng(2), 64, 64)
    if op.draw_needs_size or repr(a) != repr(b):
        raise ValueError(f"a test-time view must be deterministic; {op!r} draws random parameters "
                         "(give fixed ranges, e.g. Rotate(max_degrees=(10, 10)))")
    return a


def resolve_views(tta: Sequence[str | Op] | str | Op | None) -> list[View]:
    """The views of a ``tta=`` list (names and fixed ops), in order; one name or op alone is a
    list of one (``tta="ten-crop"``); [] for None."""
    views: list[View] = []
    for entry in [tta] if isinstance(tta, (str, Op)) else tta or ():
        if isinstance(entry, Op):
            fixed_params(entry)
            views.append(View(op=entry, name=type(entry).__name__))
        elif entry in NAMED_VIEWS:
            views.extend(NAMED_VIEWS[entry]())
        else:
            raise ValueError(f"unknown test-time view {entry!r}; use {sorted(NAMED_VIEWS)} or a fixed op")
    return views


def split_for_views(ops: Sequence[Op], views: Sequence[View]) -> tuple[list[Op], CenterCrop | None, Normalize | None]:
    """``(before, final_crop, normalize)``: the op list around its last crop, where views act.

    Raises:
        ValueError: a view moves the crop but the op list ends without a CenterCrop.
    """
    ops, normalize = split_normalize(ops)
    crop = ops.pop() if ops and isinstance(ops[-1], CenterCrop) else None
    if crop is None and any(v.crop_at != _CENTRE for v in views):
        raise ValueError("five-crop and ten-crop cut the final crop elsewhere: the augment list must end "
                         "with a CenterCrop (and Normalize), as augment='eval' does")
    return ops, crop, normalize


def crop_window(height: int, width: int, size: tuple[int, int], at: tuple[float, float]) -> tuple[int, int]:
    """Top-left corner of a ``size`` window at relative position ``at`` (DALI's rounding)."""
    th, tw = size
    return int((height - th) * at[0] + 0.5), int((width - tw) * at[1] + 0.5)


def apply_view(view: View, image: np.ndarray, crop: CenterCrop | None) -> np.ndarray:
    """One view of an HWC image, with NumPy (the torch backend's twin of the DALI branch)."""
    if view.op is not None:
        image = view.op.apply(image, fixed_params(view.op))
    if view.vflip:
        image = image[::-1]
    if crop is not None:
        th, tw = (crop.size, crop.size) if isinstance(crop.size, int) else crop.size
        h, w = image.shape[:2]
        if h < th or w < tw:  # pad as CenterCrop (and DALI's out-of-bounds policy) do
            pad_y, pad_x = max(0, (th - h + 1) // 2), max(0, (tw - w + 1) // 2)
            image = np.pad(image, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)))
            h, w = image.shape[:2]
        y, x = crop_window(h, w, (th, tw), view.crop_at)
        image = image[y : y + th, x : x + tw]
    if view.mirror:
        image = image[:, ::-1]
    return image
