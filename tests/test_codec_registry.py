"""The decoder registry (fastload.codecs): images dispatches by content without naming a codec,
and every codec's magic bytes name a format the registry reads."""

from __future__ import annotations

import ast
import pathlib

import pytest

from fastload.codecs import images
from fastload.codecs.registry import CODECS

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fastload"


def test_images_dispatches_without_naming_a_codec():
    tree = ast.parse((ROOT / "codecs" / "images.py").read_text())
    named = {f"{node.module}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    named |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert not named & {"dicom", "jpeg2000", "raster"}, named


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_every_codecs_magic_names_a_format_the_registry_reads(codec):
    for magic in codec.magic:
        head = bytearray(160)
        for offset, signature in magic.parts:
            head[offset : offset + len(signature)] = signature
        assert images.sniff_format(bytes(head)) == magic.format
        assert any(magic.format in other.formats for other in CODECS)
