"""Run under ``torchrun --nproc-per-node 2`` (gloo): what training sees, on two ranks.

Epoch 0: every rank iterates its shard with ``return_index=True`` (an all_reduce per batch, as
DDP's gradient sync) and gives each record the loss ``1 + record % 7`` through
``loader.sampler.update``. Epoch 1 then begins on both ranks (the losses of both are combined),
and each rank writes to OUT/rank{r}.json: the indices it saw per epoch, the loss weights, the
epoch-1 global order, and the gathered stall meter (rank 1's source is slowed by a sleeping op,
so the gathered report must name rank 1 the slowest).
"""

import json
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

import fastload
from fastload import ops


@fastload.op
def pause(x):
    time.sleep(0.02)
    return x


def main(store: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    augment = [ops.CenterCrop(8)] + ([pause] if rank == 1 else [])
    loader = fastload.Loader(store, batch_size=4, augment=augment, output_dtype="uint8", layout="NHWC",
                             shuffle=True, seed=5, backend="torch", device="cpu", num_threads=0,
                             return_index=True, loss_sampling=fastload.LossSampling(floor=0.2))
    seen = {}
    for epoch in range(2):
        indices = []
        for _, _labels, idx in loader:
            indices += idx.tolist()
            if epoch == 0:
                loader.sampler.update(idx, 1.0 + (idx % 7).double())
            dist.all_reduce(torch.ones(1))
        seen[epoch] = indices
        if epoch == 0:
            report = fastload.stats.report(loader)  # collective: every rank, same place
    tracker = loader._steering.tracker
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"rank": rank, "seen": seen, "weights": tracker.multipliers.tolist(),
                   "order1": loader.plan.global_order(1).tolist(), "slowest": report.slowest,
                   "waits": [s.wait_s for s in report.ranks], "batches": [s.batches for s in report.ranks],
                   "ranks": [s.rank for s in report.ranks], "report": str(report),
                   "len": len(loader), "num": int(np.asarray(loader.store.labels).size)}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
