"""Random erasing (cutout) of one box per sample, on the whole device batch at once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import BatchTransform, register_transform
from .mix import check_layout, spatial_axes

__all__ = ["RandomErasing"]


@register_transform
@dataclass(frozen=True)
class RandomErasing(BatchTransform):
    """Erase one random box per sample with probability ``p`` (torchvision's RandomErasing,
    Zhong et al. 2020), vectorized over the batch; labels pass through.

    Args:
        p: the probability a sample gets a box.
        scale: the box's share of the image area, drawn uniformly from this range.
        ratio: the box's aspect ratio, drawn log-uniformly from this range.
        value: the fill in the batch's own units (0 is the mean for normalized images), or
            "random" for standard-normal noise (per pixel).
        layout: "NCHW" or "NHWC" (default: the Loader's).
    """

    p: float = 0.5
    scale: tuple[float, float] = (0.02, 0.33)
    ratio: tuple[float, float] = (0.3, 3.3)
    value: float | str = 0.0
    layout: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0 or not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"RandomErasing needs 0 <= p <= 1 and 0 < scale <= 1, got p={self.p}, "
                             f"scale={self.scale}")
        if isinstance(self.value, str) and self.value != "random":
            raise ValueError(f"RandomErasing value is a number or 'random', got {self.value!r}")
        check_layout("RandomErasing", self.layout)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, device = images.shape[0], images.device
        y_axis, x_axis = spatial_axes(images, self.layout)
        h, w = images.shape[y_axis], images.shape[x_axis]
        u = torch.rand(n, 5, generator=rng, device=device)
        area = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0])
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
        eh = torch.sqrt(area * aspect).round().clamp(1, h)
        ew = torch.sqrt(area / aspect).round().clamp(1, w)
        top = ((h - eh + 1) * u[:, 2]).floor()
        left = ((w - ew + 1) * u[:, 3]).floor()
        erase = u[:, 4] < self.p
        ys = torch.arange(h, device=device)[None, :]
        xs = torch.arange(w, device=device)[None, :]
        rows = (ys >= top[:, None]) & (ys < (top + eh)[:, None])
        cols = (xs >= left[:, None]) & (xs < (left + ew)[:, None])
        mask = (rows[:, :, None] & cols[:, None, :]) & erase[:, None, None]  # (N, H, W)
        shape = [n] + [1] * (images.ndim - 1)
        shape[y_axis], shape[x_axis] = h, w
        if self.value == "random":
            fill = torch.randn(images.shape, generator=rng, device=device).to(images.dtype)
        else:
            fill = torch.full((), float(self.value), device=device, dtype=images.dtype)
        return torch.where(mask.view(shape), fill, images), labels
