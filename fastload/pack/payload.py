"""A record's payload from its decoded image: the source's bytes as they are, or the image
resized (``max_side``) and re-encoded losslessly where it is not an 8-bit JPEG, or the raw array."""

from __future__ import annotations

import dataclasses
from functools import partial

import cv2
import numpy as np

from ..codecs import images
from ..errors import BadInputError
from ..pixels import by_channel_chunks
from .options import PackOptions

__all__ = ["transform"]


def transform(data: bytes | None, info: images.ImageInfo, image: np.ndarray,
              options: PackOptions) -> tuple[bytes, images.ImageInfo, np.ndarray]:
    """The record's payload: ``data`` (None: no encoded form yet, as for a DICOM frame), or the
    image resized (``max_side``) and re-encoded losslessly where it is not an 8-bit JPEG, or
    the raw array."""
    if options.max_side is not None and max(info.height, info.width) > options.max_side:
        scale = options.max_side / max(info.height, info.width)
        size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
        image = _resize(image, size)
        info = dataclasses.replace(info, height=image.shape[0], width=image.shape[1])
        data = None
    if options.payload == "raw":
        return np.ascontiguousarray(image, dtype=image.dtype.newbyteorder("<")).tobytes(), info, image
    if data is None:
        fmt = _reencode_format(info.format, image)
        data = _encode(image, fmt, options.quality)
        info = dataclasses.replace(info, format=fmt, channels=image.shape[2])
    return data, info, image


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized (area averaging) at its own pixel type; 32-bit integers (DICOM), which
    OpenCV cannot resize, go through float64 (exact for them) and are rounded back."""
    resize = partial(cv2.resize, dsize=size, interpolation=cv2.INTER_AREA)
    if image.dtype in (np.int32, np.uint32):
        return np.rint(by_channel_chunks(image.astype(np.float64), resize)).astype(image.dtype)
    return by_channel_chunks(image, resize)


def _reencode_format(source_format: str, image: np.ndarray) -> str:
    """JPEG for 8-bit JPEG sources, PNG for other gray/RGB 8/16-bit images (16 bits kept),
    .npy for the rest (any channel count, int16 and float pixels), which PNG cannot hold."""
    if image.shape[2] not in (1, 3) or image.dtype not in (np.uint8, np.uint16):
        return "npy"
    return "jpeg" if source_format == "jpeg" and image.dtype == np.uint8 else "png"


def _encode(image: np.ndarray, fmt: str, quality: int) -> bytes:
    if fmt == "npy":
        return images.encode_npy(image)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.shape[2] == 3 else image
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise BadInputError("<re-encode>", f"OpenCV could not re-encode as {fmt}")
    return buf.tobytes()
