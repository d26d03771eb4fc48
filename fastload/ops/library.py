"""Operators shipped as custom ops: written once against the array API (NumPy and CuPy).

    augment = [ops.RandomResizedCrop(224), ops.HistogramEqualization(), ops.GaussianNoise(0.02),
               ops.RandomErasing(p=0.25), ops.Normalize()]

They run like user ops (``fn.python_function`` in DALI pipelines), so they show what a custom op
costs and serve as templates. ``value``/``sigma``/``shift`` are in units of the pixel type's full
range (255 for uint8, 65535 for uint16, 1 for float) so one config fits every bit depth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .custom import CustomOp, array_namespace, op

__all__ = [
    "ChannelIntensityScale",
    "GaussianNoise",
    "HistogramEqualization",
    "LIBRARY",
    "LIBRARY_NAMES",
    "RandomErasing",
    "channel_intensity_scale",
    "gaussian_noise",
    "histogram_equalization",
    "random_erasing",
]

# Float images are equalized over this many levels of 0..1.
_FLOAT_LEVELS = 4096


def _full_range(dtype: Any) -> float:
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def _restore(values: Any, dtype: Any, xp: Any) -> Any:
    """Round and clip to an integer type's range; floats keep their values."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return xp.clip(xp.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _device_rng(xp: Any, rng: np.random.Generator) -> Any:
    """A generator of ``xp``'s own kind, seeded from ``rng``: large noise fields are drawn where
    the image lives (no host-to-device copy). CPU and GPU draw different, equally valid noise."""
    return xp.random.default_rng(int(rng.integers(2**63)))


@op
def random_erasing(x: Any, rng: np.random.Generator, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), value: float | str = 0.0) -> Any:
    """Erase one random rectangle (torchvision's RandomErasing / cutout) with probability ``p``.

    The rectangle covers ``scale`` of the area with aspect ``ratio``; it is filled with ``value``
    (a fraction of full range) or, with ``value="random"``, uniform noise.
    """
    if rng.random() >= p:
        return x
    xp, (h, w, c) = array_namespace(x), x.shape
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        eh, ew = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            out = x.copy()  # inputs belong to the pipeline: never write into them
            full = _full_range(x.dtype)
            if value == "random":
                patch = _device_rng(xp, rng).random((eh, ew, c), dtype=xp.float32) * full
                out[top : top + eh, left : left + ew] = _restore(patch, x.dtype, xp)
            else:
                out[top : top + eh, left : left + ew] = _restore(xp.asarray(float(value) * full), x.dtype, xp)
            return out
    return x


@op
def gaussian_noise(x: Any, rng: np.random.Generator, sigma: float = 0.05, p: float = 1.0) -> Any:
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` (fraction of full range)."""
    if rng.random() >= p:
        return x
    xp = array_namespace(x)
    noise = _device_rng(xp, rng).standard_normal(x.shape, dtype=xp.float32)
    return _restore(x.astype(xp.float32) + noise * xp.float32(sigma * _full_range(x.dtype)), x.dtype, xp)


@op
def histogram_equalization(x: Any) -> Any:
    """Equalize each channel's histogram over its full range (X-rays, CT, microscopy).

    Integer images use one level per value (65536 for uint16: no loss of bit depth); float
    images are taken as 0..1 and equalized over 4096 levels.
    """
    xp = array_namespace(x)
    integer = np.dtype(x.dtype).kind in "ui"
    levels = int(_full_range(x.dtype)) + 1 if integer else _FLOAT_LEVELS
    if integer:
        q = x.astype(xp.int64)
    else:
        q = xp.rint(xp.clip(x, 0, 1) * (levels - 1)).astype(xp.int64)
    out = xp.empty(x.shape, dtype=xp.float64)
    for ch in range(x.shape[2]):
        values = q[:, :, ch]
        hist = xp.bincount(values.ravel(), minlength=levels)
        cdf = xp.cumsum(hist)
        cdf_min = cdf[xp.argmax(hist > 0)]
        span = max(int(cdf[-1] - cdf_min), 1)
        lut = xp.clip((cdf - cdf_min) * ((levels - 1) / span), 0, levels - 1)
        out[:, :, ch] = lut[values]
    if integer:
        return _restore(out, x.dtype, xp)
    return (out / (levels - 1)).astype(x.dtype)


@op
def channel_intensity_scale(x: Any, rng: np.random.Generator, scale: tuple[float, float] = (0.8, 1.25),
                            shift: tuple[float, float] = (0.0, 0.0)) -> Any:
    """Multiply each channel by its own factor from ``scale`` and add its own offset from
    ``shift`` (fraction of full range): stain and exposure variation in microscopy."""
    xp, channels = array_namespace(x), x.shape[2]
    gains = rng.uniform(*scale, size=channels).astype(np.float32)
    offsets = (rng.uniform(*shift, size=channels) * _full_range(x.dtype)).astype(np.float32)
    values = x.astype(xp.float32) * xp.asarray(gains) + xp.asarray(offsets)
    return _restore(values, x.dtype, xp)


# --- constructors with the usual operator names -------------------------------------------------
def RandomErasing(p: float = 0.5, scale: tuple[float, float] = (0.02, 0.33),  # noqa: N802
                  ratio: tuple[float, float] = (0.3, 3.3), value: float | str = 0.0) -> CustomOp:
    """Random erasing / cutout (see ``random_erasing``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"RandomErasing p must be in [0, 1], got {p}")
    if not (isinstance(value, (int, float)) or value == "random"):
        raise ValueError(f"RandomErasing value must be a number or 'random', got {value!r}")
    return random_erasing.with_args(p=p, scale=scale, ratio=ratio, value=value)


def GaussianNoise(sigma: float = 0.05, p: float = 1.0) -> CustomOp:  # noqa: N802
    """Additive Gaussian noise (see ``gaussian_noise``)."""
    if sigma < 0:
        raise ValueError(f"GaussianNoise sigma must be non-negative, got {sigma}")
    return gaussian_noise.with_args(sigma=sigma, p=p)


def HistogramEqualization() -> CustomOp:  # noqa: N802
    """Per-channel histogram equalization (see ``histogram_equalization``)."""
    return histogram_equalization


def ChannelIntensityScale(scale: tuple[float, float] = (0.8, 1.25),  # noqa: N802
                          shift: tuple[float, float] = (0.0, 0.0)) -> CustomOp:
    """Per-channel random gain and offset (see ``channel_intensity_scale``)."""
    if scale[0] > scale[1] or shift[0] > shift[1]:
        raise ValueError(f"ChannelIntensityScale ranges must be (low, high), got {scale}, {shift}")
    return channel_intensity_scale.with_args(scale=scale, shift=shift)


#: Config name -> constructor, and function reference -> config name.
LIBRARY = {
    "RandomErasing": RandomErasing,
    "GaussianNoise": GaussianNoise,
    "HistogramEqualization": HistogramEqualization,
    "ChannelIntensityScale": ChannelIntensityScale,
}
LIBRARY_NAMES = {
    random_erasing.function: "RandomErasing",
    gaussian_noise.function: "GaussianNoise",
    histogram_equalization.function: "HistogramEqualization",
    channel_intensity_scale.function: "ChannelIntensityScale",
}
