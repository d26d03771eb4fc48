"""Mixup and CutMix: blend pairs of samples in a batch, and their labels (soft labels out).

Every draw stays on the device as a tensor: nothing waits for the GPU (no ``.item()``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..output import LAYOUTS
from .base import BatchTransform, one_hot, register_transform

__all__ = ["Mixup", "CutMix", "spatial_axes", "check_layout"]


def _beta(alpha: float, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """One Beta(alpha, alpha) draw, a 0-d tensor on ``device`` (from two Gamma draws)."""
    g = torch._standard_gamma(torch.full((2,), float(alpha), device=device), generator=rng)
    return g[0] / (g[0] + g[1])


def check_layout(name: str, layout: str | None) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"{name} layout must be 'NCHW', 'NHWC' or None (the Loader's), got {layout!r}")


def spatial_axes(images: torch.Tensor, layout: str | None = None) -> tuple[int, int]:
    """The (height, width) axes of an NCHW or NHWC batch (counted from the end, so a batch of
    test-time views, ``(B, V, C, H, W)``, works too).

    The Loader binds its layout into the built-in transforms; without one (a transform called
    by hand) the channels are taken to be the shorter of the third-last and last axes.
    """
    if layout is None:
        layout = "NCHW" if images.shape[-3] < images.shape[-1] else "NHWC"
    last = images.ndim - 1
    return (last - 1, last) if layout == "NCHW" else (last - 2, last - 1)


def _unchanged(value: torch.Tensor, identity: float) -> bool:
    """Whether a CPU batch is left as it is (``value`` is the identity: a batch not drawn for
    mixing): then the transform returns it without the ~5 full passes of its arithmetic, whose
    result would be the same numbers (x * 1 + y * 0). On a GPU this is never asked: reading the
    value would wait for the device."""
    return value.device.type == "cpu" and bool(value == identity)


def _applied(p: float, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """1.0 with probability ``p``, else 0.0 (a 0-d tensor)."""
    return (torch.rand((), generator=rng, device=device) < p).float()


@register_transform
@dataclass(frozen=True)
class Mixup(BatchTransform):
    """Mix each sample with the batch's reverse (mixup, Zhang et al. 2018): ``lam * x_i +
    (1 - lam) * x_j`` with one ``lam ~ Beta(alpha, alpha)`` per batch, labels likewise.

    Args:
        alpha: the Beta distribution's parameter (0.2-0.4 for ImageNet).
        p: the probability a batch is mixed.
        num_classes: classes of the soft labels (default: the store's).
        label_smoothing: smoothing applied to one-hot labels before mixing.
        layout: "NCHW" or "NHWC" (default: the Loader's).
    """

    alpha: float = 0.2
    p: float = 1.0
    num_classes: int | None = None
    label_smoothing: float = 0.0
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.alpha <= 0 or not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{type(self).__name__} needs alpha > 0 and 0 <= p <= 1, "
                             f"got alpha={self.alpha}, p={self.p}")
        check_layout(type(self).__name__, self.layout)

    def _soft(self, labels: torch.Tensor) -> torch.Tensor:
        soft = one_hot(labels, self.num_classes, type(self).__name__)
        if self.label_smoothing and not labels.dtype.is_floating_point:
            soft = soft * (1.0 - self.label_smoothing) + self.label_smoothing / soft.shape[1]
        return soft

    def _lam(self, rng: torch.Generator, device: torch.device) -> torch.Tensor:
        applied = _applied(self.p, rng, device)
        return applied * _beta(self.alpha, rng, device) + (1.0 - applied)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        soft = self._soft(labels)
        lam = self._lam(rng, images.device)
        if _unchanged(lam, 1.0):
            return images, soft
        if images.dtype == torch.float32:  # the same products and sum, in two allocations, not four
            mixed = torch.mul(images, lam).add_(images.flip(0).mul_(1.0 - lam))
        else:
            mixed = images.float() * lam + images.flip(0).float() * (1.0 - lam)
        if not images.dtype.is_floating_point:
            mixed = mixed.round_()
        return mixed.to(images.dtype), soft * lam + soft.flip(0) * (1.0 - lam)


@register_transform
@dataclass(frozen=True)
class CutMix(Mixup):
    """Paste a box of each sample's batch-reverse partner into it (CutMix, Yun et al. 2019).

    The box covers ``1 - lam`` of the image (``lam ~ Beta(alpha, alpha)``), centred at a
    uniform point and clipped at the borders; labels mix by the area actually pasted.
    """

    alpha: float = 1.0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        soft = self._soft(labels)
        device = images.device
        y_axis, x_axis = spatial_axes(images, self.layout)
        h, w = images.shape[y_axis], images.shape[x_axis]
        cut = torch.sqrt(1.0 - self._lam(rng, device))  # 0 when the batch is not mixed
        centre = torch.rand(2, generator=rng, device=device)
        if _unchanged(cut, 0.0):  # after every draw: the generator moves on as when it pastes
            return images, soft
        # Python sizes only: a tensor made from a list would be a host-to-device copy, which
        # waits for the stream and so for the whole pipeline.
        spans = []
        for k, size in enumerate((h, w)):
            middle, half = centre[k] * size, cut * size / 2
            low = (middle - half).floor().clamp(min=0)
            high = (middle + half).floor().clamp(max=size)
            spans.append((low, high))
        (top, bottom), (left, right) = spans
        if device.type == "cpu":  # bounds readable for free: copy the partners' boxes, not whole batches
            return self._paste_box(images, soft, (y_axis, x_axis), (top, bottom, left, right), h * w)
        ys = torch.arange(h, device=device)
        xs = torch.arange(w, device=device)
        inside = ((ys >= top) & (ys < bottom))[:, None] & ((xs >= left) & (xs < right))[None, :]
        shape = [1] * images.ndim
        shape[y_axis], shape[x_axis] = h, w
        out = torch.where(inside.view(shape), images.flip(0), images)
        kept = 1.0 - (bottom - top).clamp(min=0) * (right - left).clamp(min=0) / float(h * w)
        return out, soft * kept + soft.flip(0) * (1.0 - kept)

    @staticmethod
    def _paste_box(images: torch.Tensor, soft: torch.Tensor, axes: tuple[int, int],
                   box: tuple[torch.Tensor, ...], area: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The CPU form of the paste: a copy of the batch with each sample's box taken from its
        batch-reverse partner (the same values as the masked ``torch.where``, without the
        flipped copy of the whole batch and the full masked pass)."""
        top, bottom, left, right = box
        region = [slice(None)] * images.ndim
        region[axes[0]], region[axes[1]] = slice(int(top), int(bottom)), slice(int(left), int(right))
        out = images.clone()
        out[tuple(region)] = images[tuple(region)].flip(0)
        kept = 1.0 - (bottom - top).clamp(min=0) * (right - left).clamp(min=0) / float(area)
        return out, soft * kept + soft.flip(0) * (1.0 - kept)
