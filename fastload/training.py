"""A training loop's work, shared by ``fastload tune`` and the benchmarks so both measure the same.

``endless_batches`` draws batches across epochs as a training loop does (``set_epoch`` each
epoch); ``TrainingStep`` trains a torchvision model on each batch, so a measurement can report
training images/s rather than loading alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ._optional import require

__all__ = ["TrainingStep", "endless_batches"]


def endless_batches(loader: Iterable) -> Iterator[Any]:
    """Batches across consecutive epochs, calling ``set_epoch`` where the loader has it.

    Shared by ``fastload tune`` and the benchmarks, so they time the same way.
    """
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the loader yields no batches (store smaller than one batch?)")
        epoch += 1


class TrainingStep:
    """One training step of a torchvision model per batch, as a training loop runs it.

    Forward, cross-entropy, backward and an SGD step (momentum 0.9). On a GPU in bf16 autocast
    with the model and the images in channels_last; on the CPU in float32. Each batch is first
    moved to ``device`` (non-blocking), so a loader on the CPU feeds a GPU model as a training
    script would. Unlabelled records (label -1) are ignored by the loss. Shared by ``fastload
    tune --model`` and the benchmarks (``--train``), so they train the same way.

    Args:
        model: a torchvision model name (``torchvision.models.list_models()``), e.g. "resnet18".
        num_classes: the classifier's outputs (the store's classes).
        device: "cuda", "cpu", or "auto" (CUDA when available).
        lr: the SGD learning rate (small: the labels are real but the run is short).

    Raises:
        MissingExtraError: torchvision is not installed.
        ValueError: torchvision has no model of that name.
    """

    def __init__(self, model: str, *, num_classes: int, device: str = "auto", lr: float = 1e-3) -> None:
        torch, models = _torchvision()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.name, self.device = model, torch.device(device)
        self.gpu = self.device.type == "cuda"
        if model not in models.list_models():
            raise ValueError(f"torchvision has no model {model!r}; for example resnet18, resnet50 "
                             "(torchvision.models.list_models() lists them all)")
        self.model = models.get_model(model, weights=None, num_classes=num_classes).train()
        self.lr = lr
        self.optimizer: Any = None  # made on the first batch, with the model on its device
        self.loss = torch.nn.CrossEntropyLoss(ignore_index=-1)
        self._torch = torch

    def _place(self) -> None:
        # On the first batch, not at construction: CUDA is first touched after the loader
        # has started (its workers may be forked) and delivered.
        torch = self._torch
        layout = torch.channels_last if self.gpu else torch.contiguous_format
        self.model = self.model.to(self.device, memory_format=layout)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=0.9)

    def __call__(self, images: Any, labels: Any) -> None:
        torch = self._torch
        if self.optimizer is None:
            self._place()
        images = images.to(self.device, non_blocking=True)
        if not images.is_floating_point():
            images = images.float()
        if self.gpu:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device, non_blocking=True).long()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.gpu):
            loss = self.loss(_logits(self.model(images)), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def synchronize(self) -> None:
        """Wait for the queued GPU work (a no-op on the CPU), before reading a clock."""
        if self.gpu:
            self._torch.cuda.synchronize(self.device)


def _torchvision() -> tuple[Any, Any]:
    return torch, require("torchvision.models", "bench", "training a model in the loop", package="torchvision")


def _logits(output: Any) -> Any:
    """Classifier logits from a model's output (GoogLeNet and Inception return tuples)."""
    if hasattr(output, "logits"):
        return output.logits
    return output[0] if isinstance(output, tuple) else output
