"""Imports flow down: no module of the loader or the ops imports one that imports it back.

The import graph is read from the source (module-level and function-level imports, and
``TYPE_CHECKING`` ones: a type-only need is a dependency too), so a circle hidden inside a
function still counts.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fastload"


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
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return False


@pytest.mark.parametrize("module", ["fastload.loader", "fastload.compat", "fastload.epochs", "fastload.loader_args",
                                    "fastload.backends.factory", "fastload.ops.custom", "fastload.ops._dali_custom",
                                    "fastload.ops.library", "fastload.ops.config", "fastload.tune",
                                    "fastload.training"])
def test_no_import_circle_through(module):
    graph = _graph()
    circle = sorted(m for m in graph[module] if _reaches(graph, m, module))
    assert not circle, f"{module} imports {circle}, which import {module} back"
