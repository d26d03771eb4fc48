"""How long a new pass waits for its first batch after a pass was broken off (and a first pass).

    python benchmarks/restart.py bench-data/sample-10x200.lmdb --batch-size 64
    python benchmarks/restart.py STORE --device cuda --threads 16 --batch-size 256 --json restart.json

Each of 5 times: three batches, a 0.5 s pause (the pipeline's prefetch completes, as during a
training step), then a new ``iter(loader)`` and its first batch. Also prints how many engines
(pipeline + feed) the loader built: 1 means nothing was rebuilt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import fastload


def measure(loader: Any, times: int = 5, pause_s: float = 0.5) -> dict[str, Any]:
    """First-batch latency of the first pass and of ``times`` passes begun after a broken-off one."""
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    waits = []
    for _ in range(times):
        for _ in range(3):
            next(it)
        time.sleep(pause_s)
        start = time.perf_counter()
        it = iter(loader)
        next(it)
        waits.append(time.perf_counter() - start)
    return {"first_batch_s": first, "restart_s": statistics.median(waits), "restarts_s": waits,
            "engines_built": len(loader._get_backend()._engines)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--times", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    loader = fastload.Loader(args.store, batch_size=args.batch_size, augment="train", shuffle=True,
                             backend="dali", device=args.device, num_threads=args.threads, drop_last=True)
    try:
        result = measure(loader, args.times)
    finally:
        loader.close()
    print(f"first batch of the first pass: {result['first_batch_s']:.2f} s; after a broken-off pass: "
          f"median {result['restart_s']:.3f} s ({', '.join(f'{w:.3f}' for w in result['restarts_s'])}); "
          f"engines built: {result['engines_built']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**vars(args), **result}, f, indent=1)
    return result


if __name__ == "__main__":
    main()
