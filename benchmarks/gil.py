"""GIL time per image: py-spy samples this process (``py-spy record --gil``) while it draws batches.

At 150 us of GIL per image no machine passes ~6,700 img/s, whatever its cores: the GIL is one
lock per process, so its time per image is the host cost that decides how a loader scales. The
iterating thread's CPU time (``host_us_per_image``) is one thread's share; this is every
thread's (the loader's own threads, DALI's Python callbacks, the batch stage) together.

py-spy samples ``RATE`` times a second without pausing the process (``--nonblocking``) and,
with ``--gil``, keeps only the sample of the thread holding the GIL, so the GIL's busy fraction
is the samples over the ticks (``RATE x seconds``) and its time per image is that fraction over
the images drawn per second in the same window. Processes of their own (feed workers, DataLoader
workers) have their own GILs and are not counted: they do not hold this one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RATE", "gil_per_image", "parse_raw_samples", "py_spy"]

RATE = 250  # samples per second: 500 ticks in a 2 s window, a resolution of 0.2% of the GIL


def py_spy() -> str | None:
    """The py-spy executable, or None where it is not installed (``pip install py-spy``)."""
    return shutil.which("py-spy")


def parse_raw_samples(text: str) -> int:
    """Samples in py-spy's ``--format raw`` output (collapsed stacks: ``a;b;c COUNT`` per line)."""
    total = 0
    for line in text.splitlines():
        _, _, count = line.rpartition(" ")
        if count.isdigit():
            total += int(count)
    return total


def gil_per_image(draw: Callable[[], int], seconds: float, rate: int = RATE) -> dict[str, Any]:
    """Sample this process with py-spy for ``seconds`` while calling ``draw()`` (which takes one
    batch and returns its image count) until py-spy ends.

    Returns ``gil_us_per_image``, ``gil_fraction`` (the GIL's busy share of the window),
    ``gil_window_images_per_s`` and ``gil_samples``; or ``{"gil_note": why}`` where py-spy is
    missing or could not sample (no ptrace permission, an unsupported Python).
    """
    spy = py_spy()
    if spy is None:
        return {"gil_note": "py-spy not installed (pip install py-spy)"}
    with tempfile.TemporaryDirectory(prefix="fastload-gil-") as tmp:
        out = os.path.join(tmp, "gil.txt")
        cmd = [spy, "record", "--gil", "--nonblocking", "--rate", str(rate), "--format", "raw",
               "--duration", str(max(1, round(seconds))), "--output", out, "--pid", str(os.getpid())]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        images, start = 0, time.perf_counter()
        while proc.poll() is None:
            images += draw()
        wall = time.perf_counter() - start
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0 or not os.path.exists(out):
            tail = " | ".join(stderr.strip().splitlines()[-2:])
            return {"gil_note": f"py-spy exited {proc.returncode}: {tail}"[:300]}
        with open(out) as f:
            samples = parse_raw_samples(f.read())
    fraction = samples / (rate * max(1, round(seconds)))
    per_s = images / wall if wall > 0 else 0.0
    return {"gil_us_per_image": 1e6 * fraction / per_s if per_s else None, "gil_fraction": fraction,
            "gil_window_images_per_s": per_s, "gil_samples": samples}
