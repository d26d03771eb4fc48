"""fastload.training: the training step and the endless batches that tune and the benchmarks share."""

from __future__ import annotations

import pytest

from fastload.training import TrainingStep, endless_batches


def test_training_step_updates_the_model_and_refuses_unknown_models():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    step = TrainingStep("shufflenet_v2_x0_5", num_classes=3, device="cpu")  # small: quick on a CPU
    before = [p.detach().clone() for p in step.model.parameters()]
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, -1])  # -1: unlabelled
    step(images, labels)
    step.synchronize()
    assert not step.gpu and any(not torch.equal(a, b) for a, b in zip(before, step.model.parameters()))
    with pytest.raises(ValueError, match="no model 'resnet_nope'"):
        TrainingStep("resnet_nope", num_classes=3, device="cpu")


class _Epochs:
    """A loader of two batches per epoch that records the epochs it was set to."""

    def __init__(self, batches: int = 2) -> None:
        self.epochs: list[int] = []
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __iter__(self):
        return iter([(self.epochs[-1], i) for i in range(self.batches)])


def test_endless_batches_run_epoch_after_epoch_and_refuse_an_empty_loader():
    loader = _Epochs()
    batches = endless_batches(loader)
    assert [next(batches) for _ in range(5)] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert loader.epochs == [0, 1, 2]
    with pytest.raises(ValueError, match="yields no batches"):
        next(endless_batches(_Epochs(batches=0)))
