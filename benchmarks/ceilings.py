"""The GPU's decode ceiling: DALI's mixed JPEG decoder alone on the benchmark's files.

A GPU loader is measured against what the GPU decodes, not against the CPU's ``cv2.imdecode``
rate (the CPU ceiling of ``data.decode_ceiling``): ``fn.readers.file`` then
``fn.decoders.image(device="mixed")`` and nothing else, at each batch size of the grid and at
several ``hw_decoder_load`` splits (the share of images given to the GPU's hardware JPEG
decoder, A100/H100; the rest go to nvJPEG's CUDA path, which uses the SMs). The best split is
the ceiling. It decodes whole images: a loader that decodes only its crop
(``decoders.image_random_crop``) can pass it.

Run in its own process by ``gpu_decode_ceiling_isolated`` (``python -m benchmarks.ceilings``),
so DALI's GPU memory pools are gone before the loaders are measured.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

__all__ = ["GPU_SPLITS", "gpu_decode_ceiling", "gpu_decode_ceiling_isolated", "gpu_ceiling_for"]

GPU_SPLITS = (0.0, 0.65, 1.0)  # CUDA path only, DALI's default split, hardware decoder only


def _decode_rate(folder: str, batch_size: int, threads: int, hw_decoder_load: float,
                 min_seconds: float, warmup: int) -> float:
    import torch
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def
    def decode_only() -> Any:
        jpegs, _ = fn.readers.file(file_root=folder, random_shuffle=True, seed=0, name="Reader")
        return fn.decoders.image(jpegs, device="mixed", output_type=types.RGB,
                                 hw_decoder_load=hw_decoder_load)

    pipe = decode_only(batch_size=batch_size, num_threads=threads, device_id=0, seed=0)
    pipe.build()
    for _ in range(warmup):
        pipe.run()
    torch.cuda.synchronize()  # device-wide: DALI's own streams included
    decoded, start = 0, time.perf_counter()
    while decoded == 0 or time.perf_counter() - start < min_seconds:
        pipe.run()
        decoded += batch_size
    torch.cuda.synchronize()
    rate = decoded / (time.perf_counter() - start)
    del pipe
    return rate


def gpu_decode_ceiling(folder: str, *, batch_sizes: Sequence[int], threads: int,
                       hw_decoder_loads: Sequence[float] = GPU_SPLITS, min_seconds: float = 2.0,
                       warmup: int = 5) -> dict[str, Any]:
    """Decode-only images/s of DALI's mixed decoder on ``folder``'s files (in this process).

    Returns:
        {"by_batch_size": {"256": {"by_hw_decoder_load": {"0": r, "0.65": r, ...},
        "best_hw_decoder_load": x, "ceiling_images_per_s": r}, ...}, "threads": ..., "method": ...}
    """
    by_batch = {}
    for batch_size in batch_sizes:
        rates = {f"{load:g}": _decode_rate(folder, batch_size, threads, load, min_seconds, warmup)
                 for load in hw_decoder_loads}
        best = max(rates, key=rates.__getitem__)
        by_batch[str(batch_size)] = {"by_hw_decoder_load": rates, "best_hw_decoder_load": float(best),
                                     "ceiling_images_per_s": rates[best]}
    return {"by_batch_size": by_batch, "threads": threads, "hw_decoder_loads": list(hw_decoder_loads),
            "method": "DALI fn.readers.file + fn.decoders.image(device='mixed'), decode only, "
                      "best hw_decoder_load split"}


def gpu_decode_ceiling_isolated(folder: str, *, batch_sizes: Sequence[int], threads: int,
                                hw_decoder_loads: Sequence[float] = GPU_SPLITS,
                                min_seconds: float = 2.0, timeout_s: float = 600.0) -> dict[str, Any]:
    """``gpu_decode_ceiling`` in a fresh subprocess; {"error": why} when it fails."""
    from .suite import run_module

    args = {"folder": folder, "batch_sizes": list(batch_sizes), "threads": threads,
            "hw_decoder_loads": list(hw_decoder_loads), "min_seconds": min_seconds}
    result = run_module("benchmarks.ceilings", json.dumps(args), timeout_s)
    if result.get("status") == "error":
        return {"error": result["note"]}
    return result


def gpu_ceiling_for(gpu_ceiling: dict[str, Any] | None, batch_size: int) -> float | None:
    """The GPU decode ceiling at ``batch_size`` (None where it was not measured)."""
    entry = (gpu_ceiling or {}).get("by_batch_size", {}).get(str(batch_size))
    return entry["ceiling_images_per_s"] if entry else None


def main(argv: list[str]) -> None:
    args = json.loads(argv[0])
    try:
        result = gpu_decode_ceiling(**args)
    except Exception as exc:  # the report says the ceiling failed; the suite goes on
        traceback.print_exc()
        result = {"status": "error", "note": f"{type(exc).__name__}: {exc}"}
    with open(argv[1], "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as the harness: a slow DALI/CUDA teardown must not stall the suite


if __name__ == "__main__":
    main(sys.argv[1:])
