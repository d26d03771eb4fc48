"""Geometric operators: random-resized crop, resize, center crop, random crop, flip."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from ..pixels import CV_MAX_MAT_CHANNELS, CV_TYPES, by_channel_chunks
from .base import Op, register

__all__ = ["RandomResizedCrop", "Resize", "CenterCrop", "RandomCrop", "Flip", "resize_image"]


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize HWC with antialiasing when shrinking and bilinear when enlarging.

    8-bit RGB(A) images that shrink go through torch's antialiased bilinear resize (Pillow's
    triangle filter, DALI's too, in SIMD: ~2.5x faster than OpenCV's INTER_AREA and ~5x faster
    than DALI's CPU resize on 3 channels); other images through OpenCV (area when shrinking).
    The result is HxWxC with the channels interleaved (C-contiguous from torch's kernel and
    OpenCV; a strided view where a torch build lacks the kernel).
    """
    h, w = image.shape[:2]
    shrinking = height < h or width < w
    if shrinking and image.dtype == np.uint8 and image.shape[2] in (3, 4):
        return _resize_torch(image, height, width)
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    # cv2.resize takes at most 4 channels (INTER_AREA): larger stacks go in groups
    return by_channel_chunks(image, lambda chunk: cv2.resize(chunk, (width, height), interpolation=interpolation))


def _resize_torch(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import torch

    # torch's SIMD path wants the whole image contiguous (channels last): a crop view is copied;
    # so is a read-only array (a raw record), which torch.from_numpy would warn about
    if not (image.flags.c_contiguous and image.flags.writeable):
        image = image.copy()
    # NCHW in and HWC out as NumPy views: a torch permute or index costs ~1 us under the GIL, NumPy's
    # a fifth of that, once per sample in the host stage (the tensors are the same either way)
    x = torch.from_numpy(image.transpose(2, 0, 1)[None])
    # the kernel F.interpolate ends in, without its ~3 us of argument checks per call (under the GIL,
    # once per sample in the host stage); F.interpolate where a torch build lacks it
    kernel = getattr(torch._C._nn, "_upsample_bilinear2d_aa", None)
    if kernel is None:
        import torch.nn.functional as F

        return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True).numpy()[0].transpose(1, 2, 0)
    # into HWC memory seen as a channels-last NCHW tensor: the kernel's own layout, so the result
    # comes ~25% sooner than the planar one it otherwise returns (224 px from ~300 px: 262 vs 349
    # us), and HWC samples stay interleaved for the ops after it (OpenCV's copy a planar image into
    # that layout); a NumPy array wrapped, not torch.empty(memory_format=...): 2 us less Python
    out = np.empty((height, width, image.shape[2]), image.dtype)
    kernel(x, (height, width), False, None, None, out=torch.from_numpy(out.transpose(2, 0, 1)[None]))
    return out


@register
@dataclass(frozen=True)
class RandomResizedCrop(Op):
    """Crop a random area (``scale`` of the image, aspect ``ratio``) and resize it to ``size``.

    The same sampling as torchvision's RandomResizedCrop: 10 tries, then a center crop with the
    ratio clamped into range. ``size`` is (height, width) or one int for a square.
    """

    size: int | tuple[int, int] = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    param_count: ClassVar[int] = 4  # the window: top, left, height, width
    draw_needs_size: ClassVar[bool] = True

    def draw(self, rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def apply(self, image: np.ndarray, params: tuple[int, int, int, int]) -> np.ndarray:
        y, x, h, w = params
        return self.after_window(image[y : y + h, x : x + w], params)

    def window(self, params: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return params

    def after_window(self, image: np.ndarray, params: tuple[int, int, int, int]) -> np.ndarray:
        return resize_image(image, *_pair(self.size))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return _pair(self.size)

    def encode(self, params: tuple[int, int, int, int]) -> tuple[float, ...]:
        return tuple(float(v) for v in params)

    def decode(self, values: Any) -> tuple[int, int, int, int]:
        y, x, h, w = values
        return int(y), int(x), int(h), int(w)

    def decoder_roi(self, params: Any) -> tuple[Any, Any]:
        from ._dali_util import as_int

        return as_int(params[0:2]), as_int(params[2:4])

    def after_roi(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn

        return fn.resize(images, size=list(_pair(self.size)), antialias=True)

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn, types

        # resize reads the window in place (no copy of it first, as a slice would make)
        anchor, shape = self.decoder_roi(params)
        return fn.resize(images, size=list(_pair(self.size)), antialias=True,
                         roi_start=fn.cast(anchor, dtype=types.FLOAT), roi_end=fn.cast(anchor + shape, dtype=types.FLOAT),
                         roi_relative=False)


@register
@dataclass(frozen=True)
class Resize(Op):
    """Resize so the shorter side is ``shorter`` (keeps aspect), or to exactly ``size`` (h, w)."""

    shorter: int | None = None
    size: int | tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if (self.shorter is None) == (self.size is None):
            raise ValueError("Resize needs exactly one of shorter= or size=")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.size is not None:
            return _pair(self.size)
        scale = self.shorter / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def apply(self, image: np.ndarray, params: Any) -> np.ndarray:
        return resize_image(image, *self.output_size(*image.shape[:2]))

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn

        if self.size is not None:
            return fn.resize(images, size=list(_pair(self.size)), antialias=True)
        return fn.resize(images, resize_shorter=float(self.shorter), antialias=True)


@register
@dataclass(frozen=True)
class CenterCrop(Op):
    """Crop the center ``size`` (h, w); pads with zeros where the image is smaller."""

    size: int | tuple[int, int] = 224

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return _pair(self.size)

    def apply(self, image: np.ndarray, params: Any) -> np.ndarray:
        th, tw = _pair(self.size)
        h, w = image.shape[:2]
        if h < th or w < tw:
            pad = ((max(0, (th - h + 1) // 2),) * 2, (max(0, (tw - w + 1) // 2),) * 2, (0, 0))
            image = np.pad(image, pad)
            h, w = image.shape[:2]
        # Half-pixel offsets round up, as DALI's crop does, so both backends cut the same window.
        y, x = int((h - th) / 2 + 0.5), int((w - tw) / 2 + 0.5)
        return image[y : y + th, x : x + tw]

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn

        return fn.crop(images, **self.cmn_args(params, ctx))

    def cmn_role(self) -> str:
        return "crop"

    def cmn_args(self, params: Any, ctx: Any) -> dict[str, Any]:
        th, tw = _pair(self.size)
        return {"crop": [th, tw], "crop_pos_x": 0.5, "crop_pos_y": 0.5, "out_of_bounds_policy": "pad"}


# torchvision's padding modes as OpenCV's borders (reflect: 2 1 | 0 1 2; symmetric: 1 0 | 0 1 2)
PADDING_MODES = {"constant": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101,
                 "symmetric": cv2.BORDER_REFLECT}
MIRRORS = ("reflect", "symmetric")


def _sides(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    """torchvision's ``padding``: one int for every side, ``(left/right, top/bottom)`` or ``(left,
    top, right, bottom)``; as ``(left, top, right, bottom)``."""
    values = (padding,) if isinstance(padding, int) else tuple(int(v) for v in padding)
    if len(values) not in (1, 2, 4) or any(v < 0 for v in values):
        raise ValueError(f"RandomCrop padding must be one, two or four non-negative ints, got {padding!r}")
    if len(values) == 1:
        return values * 4  # type: ignore[return-value]
    if len(values) == 2:
        return values[0], values[1], values[0], values[1]
    return values  # type: ignore[return-value]


@register
@dataclass(frozen=True)
class RandomCrop(Op):
    """Cut a random ``size`` (h, w) window out of the image padded by ``padding``: torchvision's
    ``RandomCrop(size, padding, pad_if_needed, fill, padding_mode)`` (CIFAR's ``RandomCrop(32,
    padding=4)`` or ``padding_mode="reflect"``; ``Resize(shorter=256)`` then ``RandomCrop(224)``).

    ``padding_mode``: ``"constant"`` (``fill``), ``"edge"`` (the border pixel repeated),
    ``"reflect"`` (mirrored without the border pixel: 2 1 | 0 1 2) or ``"symmetric"`` (with it:
    1 0 | 0 1 2), as torchvision's. Reflect and symmetric padding must be less than half the crop
    on each side (the pixels it mirrors are then inside the window), and less than the image where
    ``pad_if_needed`` pads a small one.

    ``pad_if_needed`` (default True here, False in torchvision, where a smaller image is an error
    mid-epoch): an image smaller than ``size`` after ``padding`` gets padded on both sides of that
    axis by what it lacks, as torchvision does. Each padding side must be smaller than the crop
    along it, so every window holds image pixels.

    Its drawn window is the part inside the image (``window``: only that part is decoded, by
    DALI's decoder or the store's codec) and the padding around it (``after_window``).
    """

    size: int | tuple[int, int] = 224
    padding: int | tuple[int, ...] = 0
    pad_if_needed: bool = True
    fill: float = 0.0
    padding_mode: str = "constant"

    #: the window inside the image (top, left, height, width), then the padding above and left of it
    param_count: ClassVar[int] = 6
    draw_needs_size: ClassVar[bool] = True

    def __post_init__(self) -> None:
        height, width = _pair(self.size)
        left, top, right, bottom = _sides(self.padding)
        if height < 1 or width < 1:
            raise ValueError(f"RandomCrop size must be positive, got {self.size!r}")
        if max(top, bottom) >= height or max(left, right) >= width:
            raise ValueError(f"RandomCrop padding {self.padding!r} must be smaller than the crop {self.size!r} "
                             "on each side (a window of padding alone holds no image)")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"RandomCrop padding_mode must be one of {sorted(PADDING_MODES)}, got {self.padding_mode!r}")
        if self.padding_mode in MIRRORS and (2 * max(top, bottom) >= height or 2 * max(left, right) >= width):
            raise ValueError(f"RandomCrop padding {self.padding!r} with padding_mode={self.padding_mode!r} must be less "
                             f"than half the crop {self.size!r} on each side (it mirrors pixels of the window)")

    def draw(self, rng: np.random.Generator, height: int, width: int) -> tuple[int, ...]:
        th, tw = _pair(self.size)
        left, top, right, bottom = _sides(self.padding)
        padded_h, padded_w = height + top + bottom, width + left + right
        if self.pad_if_needed and padded_h < th:  # torchvision's: both sides by what is missing
            top, padded_h = top + th - padded_h, padded_h + 2 * (th - padded_h)
        if self.pad_if_needed and padded_w < tw:
            left, padded_w = left + tw - padded_w, padded_w + 2 * (tw - padded_w)
        if padded_h < th or padded_w < tw:
            raise ValueError(f"RandomCrop({self.size!r}) of a {height}x{width} image padded to {padded_h}x{padded_w}: "
                             "the image is smaller than the crop; use pad_if_needed=True or a Resize first")
        y = int(rng.integers(0, padded_h - th + 1)) - top  # the window's top-left in the image's coordinates
        x = int(rng.integers(0, padded_w - tw + 1)) - left
        y0, x0 = max(0, y), max(0, x)
        h, w = min(height, y + th) - y0, min(width, x + tw) - x0
        if self.padding_mode in MIRRORS and not self._mirrorable(h, w, y0 - y, x0 - x):
            raise ValueError(f"RandomCrop({self.size!r}, padding_mode={self.padding_mode!r}) of a {height}x{width} "
                             "image: the padding it needs mirrors more than the image holds; use a Resize first")
        return y0, x0, h, w, y0 - y, x0 - x

    def _mirrorable(self, h: int, w: int, above: int, before: int) -> bool:
        """Whether an ``h x w`` window holds the pixels its padding mirrors (reflect leaves the
        border pixel out: one fewer)."""
        th, tw = _pair(self.size)
        most = (h, w) if self.padding_mode == "symmetric" else (h - 1, w - 1)
        return max(above, th - h - above) <= most[0] and max(before, tw - w - before) <= most[1]

    def apply(self, image: np.ndarray, params: tuple[int, ...]) -> np.ndarray:
        y, x, h, w = params[:4]
        return self.after_window(image[y : y + h, x : x + w], params)

    def window(self, params: tuple[int, ...]) -> tuple[int, int, int, int]:
        y, x, h, w = params[:4]
        return y, x, h, w

    def after_window(self, image: np.ndarray, params: tuple[int, ...]) -> np.ndarray:
        th, tw = _pair(self.size)
        h, w = image.shape[:2]
        above, before = params[4], params[5]
        if (h, w) == (th, tw):
            return image  # a view: nothing to pad
        if self.padding_mode != "constant":
            padded = cv2.copyMakeBorder(image, above, th - h - above, before, tw - w - before,
                                        PADDING_MODES[self.padding_mode])
            return padded.reshape(th, tw, image.shape[2])  # OpenCV drops a single channel's axis
        out = np.full((th, tw, image.shape[2]), self.fill, image.dtype)
        out[above : above + h, before : before + w] = image
        return out

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return _pair(self.size)

    def encode(self, params: tuple[int, ...]) -> tuple[float, ...]:
        return tuple(float(v) for v in params)

    def decode(self, values: Any) -> tuple[int, ...]:
        return tuple(int(v) for v in values)

    def decoder_roi(self, params: Any) -> tuple[Any, Any]:
        from ._dali_util import as_int

        return as_int(params[0:2]), as_int(params[2:4])

    def after_roi(self, images: Any, params: Any, ctx: Any) -> Any:
        from ._dali_util import as_int

        if self.padding_mode != "constant":
            return self._mirrored(images, params)
        return self._padded(images, -as_int(params[4:6]))

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn

        from ._dali_util import as_int

        if self.padding_mode != "constant":
            window = fn.slice(images, start=as_int(params[0:2]), shape=as_int(params[2:4]), axis_names="HW")
            return self._mirrored(window, params)
        return self._padded(images, as_int(params[0:2]) - as_int(params[4:6]))

    def _padded(self, images: Any, start: Any) -> Any:
        """The ``size`` window of ``images`` at ``start`` (top, left; outside the image: ``fill``)."""
        from nvidia.dali import fn

        return fn.slice(images, start=start, shape=list(_pair(self.size)), axis_names="HW",
                        out_of_bounds_policy="pad", fill_values=float(self.fill))

    def _mirrored(self, window: Any, params: Any) -> Any:
        """The drawn window (its own size) padded to ``size`` by ``padding_mode``: DALI pads with a
        constant only, so each side is the window's edge rows (columns) sliced, flipped and joined
        on (edge: the border row repeated, as a nearest-neighbour read clamped to the window)."""
        from nvidia.dali import fn

        from ._dali_util import as_int

        th, tw = _pair(self.size)
        h, w, above, before = (as_int(params[i]) for i in (2, 3, 4, 5))
        below, after = th - h - above, tw - w - before
        if self.padding_mode == "edge":
            return _edge_padded(window, above, before, th, tw)
        skip = 1 if self.padding_mode == "reflect" else 0  # reflect leaves the border pixel out
        for axis, (low, high, extent) in (("H", (above, below, h)), ("W", (before, after, w))):
            flip = {"vertical": int(axis == "H"), "horizontal": int(axis == "W")}  # (flip flips W by default)
            head = fn.flip(fn.slice(window, start=[skip], shape=fn.stack(low), axis_names=axis), **flip)
            tail = fn.flip(fn.slice(window, start=fn.stack(extent - high - skip), shape=fn.stack(high), axis_names=axis),
                           **flip)
            window = fn.cat(head, window, tail, axis_name=axis)
        return window


def _edge_padded(window: Any, above: Any, before: Any, height: int, width: int) -> Any:
    """``window`` moved ``above`` rows down and ``before`` columns right into a ``height x width``
    image whose other pixels repeat the nearest border pixel (DALI's warp without a fill value
    clamps its reads to the image)."""
    from nvidia.dali import fn, types

    from ._dali_util import as_float, like

    zero, one = 0.0 * fn.cast(above, dtype=types.FLOAT), 1.0 + 0.0 * fn.cast(above, dtype=types.FLOAT)
    matrix = fn.stack(fn.stack(one, zero, -fn.cast(before, dtype=types.FLOAT)),
                      fn.stack(zero, one, -fn.cast(above, dtype=types.FLOAT)))
    # float in between: DALI's CPU warp takes uint8 and float but not uint16 (exact for 16-bit values)
    moved = fn.warp_affine(as_float(window), matrix=matrix, size=[float(height), float(width)],
                           interp_type=types.INTERP_NN)
    return like(moved, window)


def _cv_flips(image: np.ndarray) -> bool:
    return image.dtype in CV_TYPES and image.shape[2] <= CV_MAX_MAT_CHANNELS


@register
@dataclass(frozen=True)
class Flip(Op):
    """Flip horizontally and/or vertically, each with probability ``p``."""

    horizontal: bool = True
    vertical: bool = False
    p: float = 0.5

    param_count: ClassVar[int] = 2  # flip horizontally, vertically (0 or 1)

    def draw(self, rng: np.random.Generator, height: int, width: int) -> tuple[bool, bool]:
        h, v = rng.random() < self.p, rng.random() < self.p
        return bool(h and self.horizontal), bool(v and self.vertical)

    def apply(self, image: np.ndarray, params: tuple[bool, bool]) -> np.ndarray:
        horizontal, vertical = params
        if horizontal and (image.shape[2] == 1 or image.strides[2] == image.itemsize) and _cv_flips(image):
            # channels interleaved: OpenCV's copy, not the view image[:, ::-1], on which NumPy's inner
            # loop is one pixel's C values, so every NumPy pass after it (a Normalize's cast,
            # ColorJitter's arithmetic, a custom op) ran ~20x slower (224 px RGB: a cast 340 us
            # instead of 17 with cv2.flip's ~4 us). A planar image (channel planes) flips as a view:
            # its rows stay the inner loop, and OpenCV would first interleave it.
            return cv2.flip(image, -1 if vertical else 1).reshape(image.shape)
        if horizontal:
            image = image[:, ::-1]
        return image[::-1] if vertical else image

    def encode(self, params: tuple[bool, bool]) -> tuple[float, ...]:
        return float(params[0]), float(params[1])

    def decode(self, values: Any) -> tuple[bool, bool]:
        return bool(values[0] > 0.5), bool(values[1] > 0.5)

    def dali(self, images: Any, params: Any, ctx: Any) -> Any:
        from nvidia.dali import fn

        from ._dali_util import as_int

        return fn.flip(images, horizontal=as_int(params[0]), vertical=as_int(params[1]))

    def cmn_role(self) -> str | None:
        return None if self.vertical else "mirror"  # crop_mirror_normalize mirrors horizontally only

    def cmn_args(self, params: Any, ctx: Any) -> dict[str, Any]:
        from ._dali_util import as_int

        return {"mirror": as_int(params[0])}
