"""Raster images (JPEG, PNG, GIF, TIFF, BMP, WebP): headers read without Pillow where the bytes
say enough, decoded with OpenCV (libjpeg-turbo, libpng, libtiff, libwebp) by the image policy
(``fastload.codecs.images``): gray as 1 channel, colour as RGB, 8 or 16 bit.

Headers are read before any pixel buffer is allocated, so a header that claims 50000x50000
pixels is refused without touching memory.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image

from ..errors import BadInputError
from .base import Codec, ImageInfo, Magic, check_pixels

__all__ = ["CODEC", "probe", "decode"]

MAGIC = (
    Magic("jpeg", ((0, b"\xff\xd8\xff"),)),
    Magic("png", ((0, b"\x89PNG\r\n\x1a\n"),)),
    Magic("gif", ((0, b"GIF87a"),)),
    Magic("gif", ((0, b"GIF89a"),)),
    Magic("tiff", ((0, b"II*\x00"),)),
    Magic("tiff", ((0, b"MM\x00*"),)),
    Magic("bmp", ((0, b"BM"),)),
    Magic("webp", ((0, b"RIFF"), (8, b"WEBP"))),
)

_DECODE_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
_SUPPORTED_DTYPES = (np.uint8, np.uint16)
# Where the header says whether an image is gray (JPEG, PNG), OpenCV is asked for the policy's
# result directly: gray as 1 channel (OpenCV would expand gray+alpha PNGs to colour), colour
# decoded straight into RGB (no BGR->RGB pass afterwards, a quarter of a JPEG decode's time).
_GRAY_FLAGS = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH
_RGB_FLAGS = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY_TYPES = (0, 4)  # IHDR colour types: gray, gray+alpha
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry Nf.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG's start-of-frame header, or None if not found."""
    i, n = 2, len(data)
    while i + 9 < n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_SOF:  # FF Cx, length(2), precision(1), height(2), width(2), Nf
            return (int.from_bytes(data[i + 5 : i + 7], "big"),
                    int.from_bytes(data[i + 7 : i + 9], "big"), data[i + 9])
        if marker == 0xDA:  # start of scan before any frame header: broken
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


# Pillow's names for what the headers say (ImageInfo.mode).
_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
_PNG_MODES = {(0, 1): "1", (0, 16): "I;16", 0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


def _read_size(data: bytes, fmt: str) -> tuple[int, int, str] | None:
    """(width, height, mode) of a JPEG or PNG from its header, without Pillow (which also
    refuses anything above its own pixel limit, whatever ``max_pixels`` says); else None."""
    if fmt == "png" and data[12:16] == b"IHDR" and len(data) >= 26:
        depth, colour = data[24], data[25]
        mode = _PNG_MODES.get((colour, depth), _PNG_MODES.get(colour))
        return (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"),
                mode) if mode else None
    if fmt == "jpeg":
        frame = _jpeg_frame(data)
        if frame and frame[0] > 0 and frame[2] in _JPEG_MODES:  # height 0: given later (DNL)
            return frame[1], frame[0], _JPEG_MODES[frame[2]]
    return None


def _header_flags(data: bytes, fmt: str | None) -> int | None:
    """OpenCV flags that give the policy's layout directly, or None to convert afterwards."""
    if fmt == "png" and data[12:16] == b"IHDR":
        gray = data[25] in _PNG_GRAY_TYPES
    elif fmt == "jpeg":
        frame = _jpeg_frame(data)
        if frame is None:
            return None
        gray = frame[2] == 1
    else:
        return None
    if gray:
        return _GRAY_FLAGS
    return None if _RGB_FLAGS is None else _RGB_FLAGS | cv2.IMREAD_ANYDEPTH


def probe(data: bytes, fmt: str, path: str, max_pixels: int) -> ImageInfo:
    """Format, size and mode from the header; the pixel count is checked here."""
    width, height, mode = _read_size(data, fmt) or _read_size_pillow(data, path, fmt)
    check_pixels(path, width, height, max_pixels)
    channels = 1 if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3
    dtype = "uint16" if mode.startswith("I") else "uint8"
    return ImageInfo(fmt, height, width, channels, dtype, mode)


def _read_size_pillow(data: bytes, path: str, fmt: str) -> tuple[int, int, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.size[0], im.size[1], im.mode
    except Image.DecompressionBombError as exc:
        raise BadInputError(path, f"refused before decoding: {exc}") from None
    except Exception as exc:  # Pillow raises many types for broken headers
        raise BadInputError(path, f"unreadable {fmt} header: {exc}") from None


def decode(data: bytes, fmt: str | None, path: str) -> np.ndarray:
    """``HxWxC`` with C = 1 or 3, uint8 or uint16. ``fmt`` None (no magic matched): OpenCV
    tries its own readers."""
    buf = np.frombuffer(data, dtype=np.uint8)
    flags = _header_flags(data, fmt)
    try:
        image = cv2.imdecode(buf, _DECODE_FLAGS if flags is None else flags)
    except cv2.error as exc:
        raise BadInputError(path, f"decoder error: {exc}") from None
    if image is None:
        raise BadInputError(path, "cannot be decoded (truncated or corrupt image data)")
    if flags is not None:  # already gray or RGB
        if image.dtype not in _SUPPORTED_DTYPES:
            raise BadInputError(path, f"unsupported pixel type {image.dtype} (expected 8 or 16 bit)")
        return image[:, :, None] if image.ndim == 2 else image
    return _to_policy(image, path)


def _to_policy(image: np.ndarray, path: str) -> np.ndarray:
    if image.dtype not in _SUPPORTED_DTYPES:
        raise BadInputError(path, f"unsupported pixel type {image.dtype} (expected 8 or 16 bit)")
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


CODEC = Codec("raster", MAGIC, ("jpeg", "png", "gif", "tiff", "bmp", "webp"), probe, decode)
