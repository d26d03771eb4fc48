"""DICOM: identify a file, read its frames, and turn them into pixels by a documented policy.

The policy (README "DICOM", docs/FORMAT.md) is applied while packing and recorded per record:

* **Frames**: the first frame (``frames="first"``, default) or one record per frame
  (``frames="all"``); a file of any frame count packs, never crashes.
* **Colour**: YBR (``YBR_FULL``, ``YBR_FULL_422``, ``YBR_ICT``, ``YBR_RCT``, ...) becomes RGB,
  as pydicom's ``pixel_array`` gives it; ``PALETTE COLOR`` is looked up into RGB.
* **Modality values**: grayscale pixels become real values (Rescale Slope/Intercept, e.g.
  Hounsfield units, or the Modality LUT), stored without loss in the smallest type that holds
  the range the header allows: ``uint8``/``uint16`` when no rescale makes values negative,
  ``int16`` for CT-style integer rescales, ``float32`` for fractional slopes (exact for the
  stored integers, which have at most 16 bits). Bit depth is kept; nothing is cast silently:
  a value that does not fit is an error naming the file.
* **MONOCHROME1** (bright = low) is inverted within that range (``lo + hi - v``), so every
  record reads bright = high; the recorded window centre is inverted with it.
* **Windowing** (VOI): by default not applied; the file's first window (centre, width,
  function) is recorded per record for a windowing op in the loader. ``window="file"`` applies
  the file's own VOI (its VOI LUT, else its first window, else the image's min..max: what a
  viewer shows first); ``window=(center, width)`` applies that window (e.g. ``(40, 400)``
  for soft tissue, ``(-600, 1500)`` for lung). Windowed records are ``uint8`` 0..255, the
  display range, by the DICOM formula (PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT, SIGMOID).

pydicom reads the files; its pixel-data plugins (the ``dicom`` extra) decode the compressed
transfer syntaxes.

The package, one job a module: ``options`` (DicomOptions), ``reading`` (identify, read, check
the header), ``encapsulated`` (frames as stored values or kept codestreams), ``attributes``
(per-frame rescale/window/spacing), ``grayscale`` (the value policy of a frame), ``frames``
(a file's records), ``metadata`` (what a record records); the value policy itself is
``fastload.codecs.pixelpolicy``, shared with JPEG 2000. This module registers the codec.
"""

from __future__ import annotations

import numpy as np

from ..base import Codec, ImageInfo, Magic
from ..pixelpolicy import PixelPolicy
from .encapsulated import JPEG2000_SYNTAXES
from .frames import DicomFrame, decode, read_frames
from .metadata import METADATA_KINDS, policy_json, record_metadata
from .options import DICOM_PAYLOADS, FRAMES, WINDOW_FUNCTIONS, DicomOptions
from .reading import PREFIX_OFFSET, is_dicom, probe, read

__all__ = ["DicomOptions", "DicomFrame", "PixelPolicy", "is_dicom", "probe", "read", "read_frames",
           "decode", "record_metadata", "policy_json", "METADATA_KINDS", "JPEG2000_SYNTAXES",
           "WINDOW_FUNCTIONS", "FRAMES", "DICOM_PAYLOADS", "CODEC"]


def _probe(data: bytes, fmt: str, path: str, max_pixels: int) -> ImageInfo:
    return probe(data, path, max_pixels)


def _decode(data: bytes, fmt: str, path: str) -> np.ndarray:
    return decode(data, path)


# ``DICM`` at offset 128 must be tried before any other signature: the 128-byte preamble may hold
# a TIFF header, as dual-personality files do (the registry lists DICOM first). Preamble-less
# files are a guess from their first element (is_dicom), tried after every codec's magic bytes.
CODEC = Codec("dicom", (Magic("dicom", ((PREFIX_OFFSET, b"DICM"),)),), ("dicom",), _probe, _decode,
              sniff=is_dicom)
