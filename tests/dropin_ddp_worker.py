"""Run under ``torchrun --nproc-per-node 2``: DDP training code as people write it for a DataLoader.

No DistributedSampler: the Loader shards by the process group, and the loop reshuffles through
``loader.sampler.set_epoch(epoch)``, the call DDP scripts make on their DataLoader's sampler. A
DistributedDataParallel model steps on every batch (unequal batch counts would hang it; the
test's timeout catches that). Each rank writes, per backend and epoch, the record tags it saw
and a checksum of each sample's pixels to OUT/rank{r}.json.
"""

import json
import sys

import torch
import torch.distributed as dist

import fastload
from fastload import ops
from fastload.loader import dali_available


def main(store: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    report = {"rank": rank, "world": dist.get_world_size()}
    for backend in ["torch"] + (["dali"] if dali_available() else []):
        loader = fastload.Loader(store, batch_size=4, augment=[ops.RandomResizedCrop(12, scale=(0.3, 1)), ops.Flip()],
                                 output_dtype="uint8", layout="NHWC", shuffle=True, seed=5, backend=backend,
                                 device="cpu", num_workers=1)
        seen = {"batches": len(loader), "samples": len(loader.sampler), "tags": {}, "pixels": {}}
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            tags, pixels = [], []
            for images, labels in loader:
                tags += images[:, 0, 0, 2].tolist()
                pixels += images[..., 1].flatten(1).sum(1).tolist()
                loss = torch.nn.functional.cross_entropy(model(images.float().mean((1, 2))), labels)
                optimizer.zero_grad()
                loss.backward()  # DDP's gradient all_reduce: a rank with one batch more would hang
                optimizer.step()
            seen["tags"][epoch], seen["pixels"][epoch] = tags, pixels
        loader.close()
        report[backend] = seen
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
