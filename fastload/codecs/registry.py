"""The decoder registry: every codec fastload reads, in the order their magic bytes are tried.

To add a format, write a module that declares a ``Codec`` (``fastload.codecs.base``) and list it
here; ``fastload.codecs.images`` dispatches over this list and names no codec itself.
"""

from __future__ import annotations

from . import arrays, dicom, jpeg2000, raster
from .base import Codec

__all__ = ["CODECS", "FALLBACK"]

# DICOM first: ``DICM`` at offset 128 wins over the TIFF header a dual-personality file keeps in
# its preamble. Arrays before raster: of the TIFFs, arrays claims those OpenCV cannot read whole
# (float pixels, several pages or samples); raster reads the rest.
CODECS: tuple[Codec, ...] = (dicom.CODEC, arrays.CODEC, raster.CODEC, jpeg2000.CODEC)
# What decodes bytes no magic names: OpenCV tries its own readers (images.decode has always
# done so; images.probe refuses them, naming what the bytes look like).
FALLBACK: Codec = raster.CODEC
