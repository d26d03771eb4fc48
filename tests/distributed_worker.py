"""Run under ``torchrun --nproc-per-node 2``: each rank iterates its shard for two epochs.

Every batch does an all_reduce, as DDP's gradient sync does: unequal batch counts would hang
(the test's timeout catches that). Each rank writes the record tags it saw to OUT/rank{r}.json.
"""

import json
import sys

import torch
import torch.distributed as dist

import fastload
from fastload import ops


def main(store: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    loader = fastload.Loader(store, batch_size=4, augment=[ops.CenterCrop(8)], output_dtype="uint8",
                             layout="NHWC", shuffle=True, seed=5, backend="torch", device="cpu",
                             num_threads=0)
    seen = {}
    for epoch in range(2):
        loader.set_epoch(epoch)
        tags = []
        for images, _ in loader:
            tags += images[:, 0, 0, 2].tolist()
            dist.all_reduce(torch.ones(1))
        seen[epoch] = tags
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"rank": rank, "world": dist.get_world_size(), "batches": len(loader), "seen": seen}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
