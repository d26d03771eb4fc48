"""Run under ``torchrun --nproc-per-node 2``: each rank trains from a store at an S3 URL through
a cache smaller than the store. Epoch 0 runs whole; epoch 1 stops after STOP batches and saves the
loader's state (as a checkpoint would). Writes OUT/rank{r}.json: the record tags each rank saw,
its batch sizes, the most bytes the cache held after any batch, and the saved state.

Every wait is bounded, so a stall ends in an error, never a hang: the cache's waits (POLICY), the
collectives' (gloo's timeout) and, last, a watchdog that prints every thread's stack and exits.
"""

import datetime
import faulthandler
import json
import sys

import torch
import torch.distributed as dist

import fastload
from fastload import ops

STOP = 3
POLICY = {"wait_for_room": 20.0, "wait_for_shard": 40.0}  # a stalled rank's partner fails within these
WATCHDOG = 100  # seconds: dump every thread's stack (the diagnosis of a hang) and exit


def main(url: str, cache: str, limit: int, out: str) -> None:
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank = dist.get_rank()
    store = fastload.open_store(url, cache_dir=cache, cache_limit=limit, policy=POLICY)
    loader = fastload.Loader(store, batch_size=4, augment=[ops.CenterCrop(8)], output_dtype="uint8",
                             layout="NHWC", shuffle=True, seed=5, backend="torch", device="cpu", num_threads=0)
    seen, sizes, most = {0: [], 1: []}, [], 0
    for epoch in range(2):
        for b, (images, _) in enumerate(loader):
            seen[epoch] += images[:, 0, 0, 2].tolist()
            sizes.append(len(images))
            most = max(most, loader.store.cache.usage())
            dist.all_reduce(torch.ones(1))  # as DDP's gradient sync: unequal batch counts would hang
            if epoch == 1 and b + 1 == STOP:
                break
    state = loader.state_dict()
    loader.close()
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"rank": rank, "batches": len(loader), "seen": seen, "sizes": sizes, "most": most,
                   "state": state, "sharded_order": loader.plan.shard_sizes is not None}, f)
    dist.destroy_process_group()
    faulthandler.cancel_dump_traceback_later()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
