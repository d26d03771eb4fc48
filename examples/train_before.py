"""BEFORE: the usual torchvision ImageFolder + DataLoader training loop.

    fastload sample data && python examples/train_before.py data
"""

from __future__ import annotations

import argparse
import time

import torch
from common import small_cnn, train_epoch
from torchvision import datasets, transforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", help="an ImageFolder tree (fastload sample makes one)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)

    transform = transforms.Compose([
        transforms.RandomResizedCrop(args.image_size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    dataset = datasets.ImageFolder(args.folder, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0)

    model = small_cnn(len(dataset.classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        loss, acc = train_epoch(model, loader, optimizer, device)
        print(f"epoch {epoch}: loss {loss:.3f}, accuracy {acc:.2f}, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
