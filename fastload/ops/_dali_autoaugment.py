"""TrivialAugmentWide and RandAugment in DALI's operators (the GPU; the CPU's host stage runs the
NumPy code).

Each op of the policy is one of 14, drawn per sample by the feed. Rather than split the batch by op (DALI's
conditionals), every stage runs on every sample with parameters that leave the samples it is not
for as they are, exactly: an identity warp, a blend with factor 1, posterize at more bits than
the type has, a threshold above full scale, flags at 0. The feed's vector holds those parameters
(``autoaugment._lowering_params``). Values stay float32 from the warp to the end, then are cut back
to the pixel type as torchvision's ``.to`` does (clamped, truncated).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import nvidia.dali.math as dmath
from nvidia.dali import fn, types

from ._dali_util import as_float, on_device

__all__ = ["augment_one"]

_LUMA = [0.2989, 0.587, 0.114] * 3  # torchvision's grayscale weights, in each of three channels
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / np.float32(13)


def augment_one(images: Any, params: Any, ctx: Any, fill: float) -> Any:
    """One op of the policy on every sample (``params``: each sample's 17 floats for it), cut back
    to the pixel type as torchvision does after each op."""
    full = float(ctx.max_value)
    integer = full > 1.0
    rgb = getattr(ctx, "channels", 3) == 3
    # the values arithmetic with the images reads, where the images are (the matrix stays on the CPU)
    p = {i: on_device(params[i], ctx) for i in range(8, 17)}
    x = _warped(as_float(images), params, fill)
    x = _blended(x, p[8], p[9], p[10], p[11], rgb, integer)
    x = _posterized(x, p[12], full, integer)
    x = x + (x >= p[13] * full) * (full - 2.0 * x)  # solarize
    x = _autocontrasted(x, p[14], full)
    x = _equalized(x, p[15], full)
    x = x + p[16] * (dmath.clamp(x, 0.0, full) - x)  # the blends and autocontrast clamp to 0..full
    return fn.cast_like(dmath.floor(x) if integer else x, images)  # as torch's .to: truncated


def _warped(x: Any, params: Any, fill: float) -> Any:
    """The shears, shifts and rotation: one nearest-neighbour warp (the identity for other ops).
    The matrix puts pixel centres at whole numbers (OpenCV's); DALI's sit at half-integers."""
    m = [params[2 + i] for i in range(6)]
    rows = [fn.stack(m[0], m[1], m[2] + 0.5 - 0.5 * (m[0] + m[1])),
            fn.stack(m[3], m[4], m[5] + 0.5 - 0.5 * (m[3] + m[4]))]
    return fn.warp_affine(x, matrix=fn.stack(*rows), fill_value=float(fill), interp_type=types.INTERP_NN)


def _blended(x: Any, factor: Any, w_luma: Any, w_mean: Any, w_smooth: Any, rgb: bool, integer: bool) -> Any:
    """Brightness, Color, Contrast, Sharpness: ``x f + other (1 - f)``, other = 0, the luma, the
    luma's mean or the smoothed image (its inner pixels: the border keeps ``x``)."""
    luma = fn.coord_transform(x, M=_LUMA) if rgb else x
    mean = fn.reductions.mean(dmath.floor(luma) if integer and rgb else luma)
    smooth = fn.filter(x, _SMOOTH, border="clamp")
    if integer:
        smooth = dmath.floor(smooth + 0.5)
    hw = x.shape(dtype=types.INT32)[0:2]
    inner = fn.slice(smooth - x, start=[1, 1], shape=hw - 2, axis_names="HW")
    sharpened = x + fn.slice(inner, start=[-1, -1], shape=hw, axis_names="HW", out_of_bounds_policy="pad",
                             fill_values=0.0)
    other = w_luma * luma + w_mean * mean + w_smooth * sharpened
    return x * factor + other * (1.0 - factor)


def _posterized(x: Any, bits: Any, full: float, integer: bool) -> Any:
    """The top ``bits`` bits of an integer pixel; a float pixel cut to ``2 ** bits`` levels (at
    more bits than the type has: the pixel itself)."""
    if integer:
        value_bits = {255.0: 8.0, 32767.0: 15.0}.get(full, 16.0)
        step = dmath.pow(2.0, dmath.max(value_bits - bits, 0.0))
        return dmath.floor(x / step) * step
    levels = dmath.pow(2.0, bits)
    return dmath.clamp(dmath.floor(x * levels), 0.0, levels - 1.0) / levels


def _autocontrasted(x: Any, flag: Any, full: float) -> Any:
    """Each channel from its min..max to 0..full where ``flag`` is 1 (a flat channel kept)."""
    low, high = fn.reductions.min(x, axes=[0, 1]), fn.reductions.max(x, axes=[0, 1])
    flat = high == low
    scale = flat + (1.0 - flat) * (high - low) * (1.0 / full)
    stretched = (x - (1.0 - flat) * low) / scale
    return x + flag * (stretched - x)


def _equalized(x: Any, flag: Any, full: float) -> Any:
    """DALI's histogram equalization (8 bits; 16-bit through the top 8, float through x * 256, as
    torchvision converts; other integer types left as they are) where ``flag`` is 1."""
    if full > 1.0 and full not in (255.0, 65535.0):
        return x
    if full == 255.0:
        equalized = fn.cast(fn.equalize(fn.cast(x, dtype=types.UINT8)), dtype=types.FLOAT)
    elif full == 65535.0:
        top = fn.cast(dmath.floor(x / 256.0), dtype=types.UINT8)
        equalized = fn.cast(fn.equalize(top), dtype=types.FLOAT) * 256.0
    else:
        eight = fn.cast(dmath.floor(dmath.clamp(x, 0.0, 1.0) * (256.0 - 1e-3)), dtype=types.UINT8)
        equalized = fn.cast(fn.equalize(eight), dtype=types.FLOAT) / 255.0
    return x + flag * (equalized - x)
