"""A DICOM data set's frames as stored values: decoded by pydicom's pixel-data plugins (with
libjpeg-turbo for the JPEG processes they cannot read), or kept as their encapsulated
codestreams (JPEG 2000 transfer syntaxes)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..._optional import available
from ...errors import BadInputError
from .reading import int_attr

__all__ = ["JPEG2000_SYNTAXES", "decoded_frames", "codestreams"]

# Transfer syntaxes whose frames are JPEG 2000 codestreams (kept as they are with payload="codestream").
JPEG2000_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless only
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
})


def decoded_frames(ds: Any, indices: list[int], path: str) -> Iterator[np.ndarray]:
    """The stored values of frames ``indices`` (HxW, or HxWx3 RGB), decoded one at a time."""
    from pydicom.pixels import iter_pixels

    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    done = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for array in iter_pixels(ds, indices=indices):
                yield np.asarray(array)
                done += 1
    except Exception as exc:  # the decoding plugins raise many types
        if syntax in _LIBJPEG_TURBO_SYNTAXES and done == 0 and _imagecodecs() is not None:
            yield from _libjpeg_turbo_frames(ds, indices, path)  # e.g. 12-bit JPEG Extended
            return
        name = getattr(getattr(ds.file_meta, "TransferSyntaxUID", None), "name", None) if hasattr(
            ds, "file_meta") else None
        raise BadInputError(path, f"DICOM pixel data ({name or syntax or 'no transfer syntax'}) "
                                  f"cannot be decoded: {type(exc).__name__}: {exc}") from None


# JPEG processes that libjpeg-turbo 3 decodes (through imagecodecs) where pydicom's permissive
# plugins cannot: 12-bit JPEG Extended above all (pydicom has only GPL libjpeg for it).
_LIBJPEG_TURBO_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",  # baseline, extended (12-bit)
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",  # lossless (Process 14, SV1)
})


def _imagecodecs():
    return importlib.import_module("imagecodecs") if available("imagecodecs") else None


def _libjpeg_turbo_frames(ds: Any, indices: list[int], path: str) -> Iterator[np.ndarray]:
    """Frames of a JPEG-compressed data set decoded by libjpeg-turbo, as pydicom would give
    them: RGB for colour, signed values read from Pixel Representation."""
    imagecodecs = _imagecodecs()
    count = max(1, int_attr(ds, "NumberOfFrames", 1))
    streams = codestreams(ds, count, path)
    signed = int_attr(ds, "PixelRepresentation", 0) == 1
    bits = int_attr(ds, "BitsStored", 16)
    for index in indices:
        try:
            array = np.asarray(imagecodecs.jpeg8_decode(streams[index]))
        except Exception as exc:
            raise BadInputError(path, f"DICOM JPEG frame {index} cannot be decoded: {exc}") from None
        if signed and array.ndim == 2:
            values = array.astype(np.int32)
            values[values >= (1 << (bits - 1))] -= 1 << bits
            array = values.astype(np.int16 if bits <= 16 else np.int32)
        yield array


def codestreams(ds: Any, count: int, path: str) -> list[bytes]:
    """The encapsulated codestream of each of the ``count`` frames, as the file holds it."""
    from pydicom.encaps import generate_frames

    try:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    except Exception as exc:
        raise BadInputError(path, f"the encapsulated JPEG 2000 frames cannot be split: {exc}") from None
