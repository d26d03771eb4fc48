"""The house (docs/ARCHITECTURE.md): imports flow down the layers, and there are no circles.

The import graph is read from the source: module-level imports, imports inside functions and
``TYPE_CHECKING`` ones (a type-only need is a dependency too), so a circle or an upward arrow
hidden inside a function still counts.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fastload"

# Top to bottom, as docs/ARCHITECTURE.md draws them; a module belongs to the first entry that is
# its name or a package above it. An import may stay in its layer or go down, never up.
LAYERS = [
    ["fastload.cli"],
    ["fastload.tune"],
    ["fastload"],  # the public face
    ["fastload.loader"],
    ["fastload.loader_args", "fastload.steering", "fastload.integrations"],
    ["fastload.compat", "fastload.backends.factory", "fastload.inspect", "fastload.audit"],
    ["fastload.backends.dali", "fastload.backends.torch"],
    ["fastload.backends", "fastload.transforms", "fastload.tta", "fastload.pack", "fastload.splits",
     "fastload.sample"],
    ["fastload.output", "fastload.stores"],
    ["fastload.ops", "fastload.codecs", "fastload.sources"],
    ["fastload.workers", "fastload.training", "fastload.stats", "fastload.epochs", "fastload.sampling",
     "fastload.loss_sampling", "fastload.distributed", "fastload.pixels", "fastload.threads",
     "fastload.config_files", "fastload._optional", "fastload.errors", "fastload._version"],
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in modules else target)
    return {m for m in found if m in modules and m != name}


@functools.cache
def _graph() -> dict[str, frozenset[str]]:
    modules = _modules()
    return {name: frozenset(_imports(name, path, modules)) for name, path in modules.items()}


def _layer(module: str) -> int:
    best = None
    for depth, rooms in enumerate(LAYERS):
        for room in rooms:
            if module == room or module.startswith(room + "."):
                if best is None or len(room) > len(best[1]):
                    best = (depth, room)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/ARCHITECTURE.md")
    return best[0]


def _reaches(graph: dict[str, frozenset[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return False


@pytest.mark.parametrize("module", sorted(_graph()))
def test_no_import_circle_through(module):
    graph = _graph()
    circle = sorted(m for m in graph[module] if _reaches(graph, m, module))
    assert not circle, f"{module} imports {circle}, which import {module} back"


def test_every_import_runs_down_the_layers():
    graph = _graph()
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if _layer(d) < _layer(m))
    assert not upward, "imports running up the layers: " + ", ".join(upward)


def test_the_bottom_imports_nothing_above_it():
    graph = _graph()
    bottom = len(LAYERS) - 1
    assert all(_layer(d) == bottom for m, deps in graph.items() if _layer(m) == bottom for d in deps)
