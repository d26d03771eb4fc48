"""The import layering of the codecs, pack and pixel-helper rooms: no circles, no upward arrows.

Read from the source (top-level imports only), so a circle shows here whichever module a
process happens to import first.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from fastload.codecs import images
from fastload.codecs.registry import CODECS

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fastload"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """The fastload modules ``path`` imports at its top level (``from pkg import mod`` as pkg.mod)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                is_module = any(_module_name(p) == candidate for p in _ROOM_FILES)
                found.add(candidate if is_module else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("fastload")}


_ROOM_FILES = sorted([*ROOT.glob("codecs/**/*.py"), *ROOT.glob("pack/**/*.py"), ROOT / "pixels.py"])
GRAPH = {_module_name(p): _imports(p) for p in _ROOM_FILES}


def _cycle_from(start: str) -> list[str] | None:
    stack, seen = [(start, [start])], set()
    while stack:
        node, trail = stack.pop()
        for dep in GRAPH.get(node, ()):
            if dep == start:
                return [*trail, dep]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, [*trail, dep]))
    return None


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_circle(module):
    assert _cycle_from(module) is None, " -> ".join(_cycle_from(module))


@pytest.mark.parametrize("room, forbidden", [
    ("fastload.pixels", ("fastload.",)),  # the bottom: NumPy only
    ("fastload.codecs", ("fastload.pack", "fastload.ops", "fastload.stores", "fastload.backends",
                         "fastload.loader")),
    ("fastload.pack", ("fastload.ops", "fastload.backends", "fastload.loader")),
])
def test_nothing_imports_upward(room, forbidden):
    upward = {(m, dep) for m, deps in GRAPH.items() if m == room or m.startswith(room + ".")
              for dep in deps if dep.startswith(forbidden) and dep != "fastload.errors"}
    assert not upward, upward


def test_images_dispatches_without_naming_a_codec():
    deps = GRAPH["fastload.codecs.images"]
    assert not deps & {"fastload.codecs.dicom", "fastload.codecs.jpeg2000", "fastload.codecs.raster"}, deps


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_every_codecs_magic_names_a_format_the_registry_reads(codec):
    for magic in codec.magic:
        head = bytearray(160)
        for offset, signature in magic.parts:
            head[offset : offset + len(signature)] = signature
        assert images.sniff_format(bytes(head)) == magic.format
        assert any(magic.format in other.formats for other in CODECS)
