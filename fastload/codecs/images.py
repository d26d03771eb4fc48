"""Identify, validate and decode encoded images by their content, never their extension.

Decode policy (documented in docs/FORMAT.md and the README):

* Colour images (RGB, YCbCr, CMYK, palette, with or without alpha) decode to 3-channel RGB;
  an alpha channel is dropped.
* Grayscale images (8 or 16 bit, with or without alpha) decode to 1 channel (``HxWx1``).
* 16-bit PNG/TIFF keep their depth (``uint16``); nothing is truncated to 8 bits.
* DICOM follows its own documented policy (``fastload.codecs.dicom``): real (rescaled) values in
  ``uint8``/``uint16``/``int16``/``float32``, MONOCHROME1 inverted, YBR as RGB.
* EXIF orientation is applied, so pixels are upright as a photo viewer shows them.
* GIF and animated WebP: the first frame.
* Arrays (``.npy`` files, and TIFFs with several pages, channels other than gray/RGB(A), or
  float pixels) keep every channel and their pixel type (uint8, uint16, int16, float32; float
  values are taken as 0..1, except DICOM real values). HxW, HxWxC and CxHxW are told apart by ``array_layout``.

This module is the policy and the dispatch; the codecs (``raster``: OpenCV and Pillow, ``arrays``:
NumPy and tifffile, ``dicom``, ``jpeg2000``) are listed in ``fastload.codecs.registry``. Headers
are read before any pixel buffer is allocated, so a header that claims 50000x50000 pixels is
refused without touching memory.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from .arrays import ARRAY_DTYPES, MAX_CHANNELS, array_layout, encode_npy
from .base import DEFAULT_MAX_PIXELS, Codec, ImageInfo, Window, cut_window
from .registry import CODECS, FALLBACK

__all__ = ["ImageInfo", "DEFAULT_MAX_PIXELS", "MAX_CHANNELS", "ARRAY_DTYPES", "BadInputError",
           "array_layout", "encode_npy", "sniff_format", "probe", "decode", "validate"]


def sniff_format(data: bytes) -> str | None:
    """Return the image format named by the leading magic bytes, or None.

    Every codec's magic bytes are tried in registry order (``DICM`` at offset 128 first: a DICOM
    file's 128-byte preamble may hold a TIFF header, as dual-personality files do); then the
    weaker guesses (preamble-less DICOM).
    """
    for codec in CODECS:
        for magic in codec.magic:
            if magic.matches(data):
                return magic.format
    for codec in CODECS:
        if codec.sniff is not None and codec.sniff(data):
            return codec.formats[0]
    return None


def _codec_for(data: bytes, fmt: str, path: str) -> Codec:
    """The first codec that reads ``fmt`` and claims this input."""
    for codec in CODECS:
        if fmt in codec.formats and (codec.claims is None or codec.claims(data, fmt, path)):
            return codec
    raise BadInputError(path, f"no decoder reads {fmt} files like this one")


def _describe_non_image(data: bytes) -> str:
    if not data:
        return "empty file (0 bytes)"
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "not an image: the file holds HTML/XML text"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in data[:256]):
        return "not an image: the file holds plain text"
    return f"not a recognised image format (first bytes {data[:8].hex(' ')})"


def probe(data: bytes, path: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read the header only: format, size and mode. Raises BadInputError.

    The pixel count is checked here, before any decode allocates a buffer.
    """
    fmt = sniff_format(data)
    if fmt is None:
        raise BadInputError(path, _describe_non_image(data))
    return _codec_for(data, fmt, path).probe(data, fmt, path, max_pixels)


def decode(data: bytes, path: str = "<bytes>", window: Window | None = None, *,
           into: np.ndarray | None = None) -> np.ndarray:
    """Decode encoded bytes to an ``HxWxC`` array by the policy: C = 1 or 3, uint8 or uint16
    for images; every channel, uint8, uint16 or float32 for arrays (.npy, array TIFFs).

    ``window``: (top, left, height, width) of the decoded image to return (a random-resized
    crop's): codecs that can decode less for it do (arrays); the others decode the whole image and
    return the window's view. ``into``: a flat uint8 buffer the result may be laid out at the start
    of, by codecs that can (arrays: the DALI feed's slot, one copy less); others ignore it."""
    fmt = sniff_format(data)
    codec = FALLBACK if fmt is None else _codec_for(data, fmt, path)
    if codec.decode_window is not None and (window is not None or into is not None):
        return codec.decode_window(data, fmt, path, window, into)
    if window is None:
        return codec.decode(data, fmt, path)
    return cut_window(codec.decode(data, fmt, path), window, path)


def validate(
    data: bytes, path: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[ImageInfo, np.ndarray]:
    """Probe the header, then decode fully; return the info and the decoded pixels.

    The checks every codec shares are made here (the header's size against the pixels', finite
    float values); each codec checks its own header in its probe. Raises BadInputError with a
    reason a user can act on.
    """
    info = probe(data, path, max_pixels)
    image = decode(data, path)
    h, w, c = image.shape
    if (h, w) != (info.height, info.width) and (w, h) != (info.height, info.width):
        raise BadInputError(path, f"header says {info.width}x{info.height}, pixels are {w}x{h}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise BadInputError(path, "float pixels include NaN or infinity")
    return ImageInfo(info.format, h, w, c, str(image.dtype), info.mode), image
