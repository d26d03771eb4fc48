"""AFTER: the same loop with fastload.Loader over a packed store. Three lines changed:
the store is packed once, the DataLoader becomes a Loader, and set_epoch reshuffles.

    fastload sample data && fastload pack data && python examples/train_after.py data.lmdb
"""

from __future__ import annotations

import argparse
import time

import torch
from common import small_cnn, train_epoch

import fastload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", help="a store made by `fastload pack` (.lmdb or .h5)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="auto", choices=["auto", "dali", "torch"])
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)

    loader = fastload.Loader(args.store, batch_size=32, augment="train", image_size=args.image_size,
                             shuffle=True, seed=0, drop_last=True, num_threads=args.threads,
                             backend=args.backend, device=device)

    model = small_cnn(len(loader.dataset.classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        start = time.perf_counter()
        loss, acc = train_epoch(model, loader, optimizer, device)
        print(f"epoch {epoch}: loss {loss:.3f}, accuracy {acc:.2f}, {time.perf_counter() - start:.1f} s "
              f"[{loader.backend_name} backend on {loader.device}]")


if __name__ == "__main__":
    main()
