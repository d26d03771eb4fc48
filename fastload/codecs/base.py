"""What every codec shares: the facts a header gives (ImageInfo), the pixel limit, and the shape of
a registry entry (Codec): how a codec knows its content, reads its header, and decodes it.

Codecs import this module and nothing of each other; ``fastload.codecs.registry`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError

__all__ = ["ImageInfo", "Magic", "Codec", "Window", "DEFAULT_MAX_PIXELS", "check_pixels", "check_window",
           "cut_window"]

# (top, left, height, width) of the part of an image a caller wants (a random-resized crop's window)
Window = tuple[int, int, int, int]

# Pillow refuses headers above twice its MAX_IMAGE_PIXELS; we use the same bound by default.
DEFAULT_MAX_PIXELS = 2 * 89_478_485


@dataclass(frozen=True)
class ImageInfo:
    """What the header and the decode of one image say about it."""

    format: str  # "jpeg", "png", "gif", "tiff", "bmp", "webp", "dicom", "npy"
    height: int
    width: int
    channels: int  # after the decode policy: 1 or 3 for images, any count for arrays
    dtype: str  # "uint8" or "uint16" ("float32" for arrays)
    # The source's colour mode as Pillow names it ("RGB", "CMYK", "P", "I;16", ...); for arrays
    # the layout the array was read in ("HW", "HWC" or "CHW").
    mode: str


@dataclass(frozen=True)
class Magic:
    """Bytes at fixed offsets that name a format: every ``(offset, bytes)`` part must match.

    >>> Magic("webp", ((0, b"RIFF"), (8, b"WEBP"))).matches(b"RIFF\\0\\0\\0\\0WEBPVP8L")
    True
    """

    format: str
    parts: tuple[tuple[int, bytes], ...]

    def matches(self, data: bytes) -> bool:
        return all(data[offset : offset + len(magic)] == magic for offset, magic in self.parts)


@dataclass(frozen=True)
class Codec:
    """One entry of the decoder registry.

    Attributes:
        name: the codec's name ("raster", "arrays", "dicom", "jpeg2000").
        magic: the signatures that identify its formats, tried in registry order.
        formats: the formats it reads; a format may be shared (TIFF: arrays, then raster).
        probe: ``(data, format, path, max_pixels) -> ImageInfo`` from the header alone, the
            pixel limit checked before any buffer is allocated; raises BadInputError.
        decode: ``(data, format, path) -> HxWxC array`` by the decode policy; raises BadInputError.
        claims: ``(data, format, path) -> bool``: whether it reads this input of a shared format
            (None: every input of its formats).
        sniff: a weaker test than magic bytes, tried only when no codec's magic matched (DICOM
            files without a preamble); None: magic bytes only.
        decode_window: ``(data, format, path, window, into) -> the window of decode's array``
            (``window`` None: the whole), for a codec that decodes a window for less than the whole
            image; ``into``: None, or a flat uint8 buffer the result may be laid out at the start
            of (a feed slot: no copy after); None: decode, then cut.
    """

    name: str
    magic: tuple[Magic, ...]
    formats: tuple[str, ...]
    probe: Callable[[bytes, str, str, int], ImageInfo]
    decode: Callable[[bytes, str, str], np.ndarray]
    claims: Callable[[bytes, str, str], bool] | None = None
    sniff: Callable[[bytes], bool] | None = None
    decode_window: Callable[[bytes, str, str, Window | None, np.ndarray | None], np.ndarray] | None = None


def check_window(height: int, width: int, window: Window, path: str) -> None:
    """Refuse a window that does not lie inside a ``height x width`` image (a record table that
    disagrees with its record)."""
    top, left, h, w = window
    if top < 0 or left < 0 or h <= 0 or w <= 0 or top + h > height or left + w > width:
        raise BadInputError(path, f"the window {h}x{w} at ({top}, {left}) does not lie inside the decoded "
                                  f"{height}x{width} image (a record table that disagrees with its record)")


def cut_window(image: np.ndarray, window: Window, path: str) -> np.ndarray:
    """The ``window`` of an ``HxWxC`` array, as a view; BadInputError if it does not fit."""
    check_window(image.shape[0], image.shape[1], window, path)
    top, left, height, width = window
    return image[top : top + height, left : left + width]


def check_pixels(path: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse a header that claims an empty image or more than ``max_pixels`` pixels."""
    if width <= 0 or height <= 0:
        raise BadInputError(path, f"header claims an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise BadInputError(
            path,
            f"header claims {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,}; raise max_pixels (--max-pixels) if this is intended",
        )
