"""The competition workflow: leak-free folds, train one fold, predict new images with TTA.

    fastload sample data && fastload pack data && python examples/competition.py data.lmdb data

1. ``fastload.folds`` splits the store into k folds (stratified by label; ``groups=`` keeps every
   patient or plate in one fold when the store carries that column from the packing CSV);
2. one fold trains (``Loader(indices=train_idx)``) and validates (``indices=val_idx``);
3. a folder of new images is predicted without packing, averaging test-time views;
4. the predictions go to a submission CSV, one row per file, in order.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil

import torch
from common import small_cnn, train_epoch

import fastload


def make_test_folder(source: str, out: str, count: int) -> str:
    """A flat folder of unlabelled images, as a competition's test set comes."""
    os.makedirs(out, exist_ok=True)
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(source) for f in names)
    for i, path in enumerate(files[::max(1, len(files) // count)][:count]):
        shutil.copy(path, os.path.join(out, f"test_{i:04d}{os.path.splitext(path)[1]}"))
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, loader: fastload.Loader, device: str) -> list[tuple[str, int]]:
    """(file name, class) for every image: softmax averaged over the test-time views."""
    model.eval()
    rows = []
    for images, keys in loader:  # images: (B, views, C, H, W); keys: file names, in order
        b, v = images.shape[:2]
        probs = model(images.to(device).flatten(0, 1)).softmax(1).view(b, v, -1).mean(1)
        rows += zip(keys, probs.argmax(1).tolist())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", help="a labelled store made by `fastload pack`")
    parser.add_argument("images", help="a folder of images to take a test set from")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--groups", help="a metadata column to group by (e.g. patient_id)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backend", default="auto", choices=["auto", "dali", "torch"])
    parser.add_argument("--out", default="submission.csv")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)

    folds = fastload.folds(args.store, k=args.folds, stratify=True, groups=args.groups, seed=0)
    folds.save("folds.json")
    train_idx, val_idx = folds[0]
    common = dict(image_size=args.image_size, batch_size=32, backend=args.backend, device=device, num_threads=2)
    train = fastload.Loader(args.store, indices=train_idx, augment="train", shuffle=True, seed=0, **common)
    val = fastload.Loader(args.store, indices=val_idx, augment="eval", **common)

    model = small_cnn(len(train.dataset.classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(args.epochs):
        loss, acc = train_epoch(model, train, optimizer, device)
        print(f"fold 0 epoch {epoch}: train loss {loss:.3f}, accuracy {acc:.2f}")
    model.eval()
    with torch.no_grad():
        hits = sum((model(x.to(device)).argmax(1).cpu() == y).sum().item() for x, y in val)
    print(f"fold 0 validation accuracy: {hits / len(val_idx):.2f} on {len(val_idx)} images")

    test_dir = make_test_folder(args.images, "test_images", 24)
    test = fastload.Loader(test_dir, augment="eval", tta=["identity", "hflip"], **common)
    rows = predict(model, test, device)
    classes = train.dataset.classes
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        writer.writerows((key, classes[c]) for key, c in rows)
    print(f"wrote {args.out}: {len(rows)} predictions")


if __name__ == "__main__":
    main()
