"""The README's Python examples run as written, against a store packed the README's way."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import fastload
from fastload.sample import SampleSpec, make_sample_folder

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
BLOCKS = re.findall(r"```python\n(.*?)```", open(README, encoding="utf-8").read(), re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("readme")
    make_sample_folder(root / "data", SampleSpec(num_classes=2, per_class=40, short_side=(64, 96)), workers=1)
    fastload.pack(root / "data", options=fastload.PackOptions(workers=1, progress=False))
    return str(root)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(workdir, index):
    script = os.path.join(workdir, f"block{index}.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(BLOCKS[index])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, script], cwd=workdir, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
