"""Moved to ``fastload.pixels``; kept only for the modules that still import it from here.

LEAD: loader.py and backends/ (outside the codecs branch's scope) import pixel_dtype and
to_pixel_dtype from this module; point them at fastload.pixels when merging, then delete it.
"""

from .pixels import pixel_dtype, to_pixel_dtype

__all__ = ["pixel_dtype", "to_pixel_dtype"]
