"""How long a new pass waits for its first batch after a pass was broken off (and a first pass).

    python benchmarks/restart.py bench-data/sample-10x200.lmdb --batch-size 64

Each of 5 times: three batches, a 0.5 s pause (the pipeline's prefetch completes, as during a
training step), then a new ``iter(loader)`` and its first batch. Also prints how many engines
(pipeline + feed) the loader built: 1 means nothing was rebuilt.
"""

from __future__ import annotations

import argparse
import statistics
import time

import fastload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    loader = fastload.Loader(args.store, batch_size=args.batch_size, augment="train", shuffle=True,
                             backend="dali", device=args.device, num_threads=args.threads, drop_last=True)
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    waits = []
    for _ in range(5):
        for _ in range(3):
            next(it)
        time.sleep(0.5)
        start = time.perf_counter()
        it = iter(loader)
        next(it)
        waits.append(time.perf_counter() - start)
    print(f"first batch of the first pass: {first:.2f} s; after a broken-off pass: median "
          f"{statistics.median(waits):.3f} s ({', '.join(f'{w:.3f}' for w in waits)}); "
          f"engines built: {len(loader._get_backend()._engines)}")


if __name__ == "__main__":
    main()
