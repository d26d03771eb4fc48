"""The README's Python examples run as written, each in a scratch directory of its own beside the
quick start's data (``fastload sample data`` and ``fastload pack --format lmdb data``, as the quick
start makes them), and leave nothing in the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from fastload.cli import main as fastload_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(README, encoding="utf-8").read(), re.S)


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory) -> str:
    """The quick start's data: 10 classes x 40 ImageNet-like JPEGs, packed into data.lmdb."""
    root = tmp_path_factory.mktemp("quick-start")
    assert fastload_cli(["sample", str(root / "data")]) == 0
    assert fastload_cli(["pack", "--format", "lmdb", str(root / "data")]) == 0  # -> data.lmdb beside it
    return str(root)


def _repository_state() -> str:
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(quick_start, tmp_path, index):
    for name in ("data", "data.lmdb"):
        os.symlink(os.path.join(quick_start, name), tmp_path / name)
    script = tmp_path / f"block{index}.py"
    script.write_text(textwrap.dedent(BLOCKS[index]), encoding="utf-8")  # a block in a list is indented
    before = _repository_state()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _repository_state() == before, "the block wrote into the repository"
