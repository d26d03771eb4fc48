"""The torch backend's finish (fastload.output.finish_tensor): normalize + layout in one output
allocation, made in shared memory inside DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import normalized
from torch.utils.data import DataLoader, Dataset

from fastload import ops
from fastload.output import OutputSpec, batch_tensor, finish_tensor


def _reference(images: torch.Tensor, mean: np.ndarray, std: np.ndarray, nchw: bool) -> torch.Tensor:
    """The output stage's normalize in float64 (rounded once), in the output's layout."""
    out = torch.from_numpy(normalized(images.numpy(), mean, std))
    return (out.permute(0, 3, 1, 2) if nchw else out).contiguous()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("pixels", ["uint8", "int32"])  # int32 carries 16-bit images
def test_normalized_output_is_bit_for_bit_one_fused_multiply_add_and_within_2e7_of_the_quotient(layout, pixels):
    rng = np.random.default_rng(0)
    high, pixel = (256, "uint8") if pixels == "uint8" else (65536, "uint16")
    images = torch.from_numpy(rng.integers(0, high, (4, 24, 20, 3)).astype(pixels))
    spec = OutputSpec(layout=layout, pixel_dtype=pixel, normalize=ops.Normalize())
    out = finish_tensor(images, spec)
    mean, std = spec.mean_std(3, images.dtype)
    expected = _reference(images, mean, std, layout == "NCHW")
    assert out.shape == expected.shape and out.is_contiguous() and out.dtype == torch.float32
    assert torch.equal(out, expected)
    quotient = (images.double() - torch.from_numpy(mean).double()) / torch.from_numpy(std).double()
    quotient = quotient.permute(0, 3, 1, 2) if layout == "NCHW" else quotient
    torch.testing.assert_close(out.double(), quotient, rtol=0, atol=1e-6)


class _Batches(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        out = batch_tensor((2, 3, 8, 8), torch.float32, torch.device("cpu"))
        return torch.tensor([out.is_shared(), out.is_contiguous(), tuple(out.shape) == (2, 3, 8, 8)])


def test_a_worker_makes_its_batch_in_shared_memory_and_the_main_process_in_its_own():
    worker = next(iter(DataLoader(_Batches(), batch_size=None, num_workers=1)))
    assert worker.tolist() == [True, True, True]
    main = batch_tensor((2, 3, 8, 8), torch.float32, torch.device("cpu"))
    assert not main.is_shared()


# --- reused shared-memory batches (backends/torch/slots.py) ------------------------------------
def test_a_shared_block_is_handed_out_again_only_once_nothing_refers_to_it():
    import multiprocessing

    from fastload.backends.torch.slots import BatchSlots

    slots = BatchSlots(3, (4, 2, 2), torch.float32)
    first, second = slots.take(), slots.take()
    assert (first, second) == (0, 1)  # in flight until the batch comes back
    held = slots.batch(first, 3)
    view = slots.batch(second, 4)[1:2].permute(0, 2, 1)  # a view keeps its block too
    assert held.shape == (3, 2, 2) and slots.take() == 2 and slots.take() == -1
    del held
    assert slots.take() == 0 and slots.take() == -1
    del view
    slots.reset()  # a new pass: nothing in flight
    assert [slots.take() for _ in range(4)] == [0, 1, 2, -1]
    # spawned workers get the same shared memory, not a copy (torch's reducer shares the tensors)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        pool.apply(_fill_block, (slots, 1))
    assert torch.equal(slots.batch(1, 4), torch.full((4, 2, 2), 7.0))


def _fill_block(slots, slot):
    slots.target(slot, 4)[...] = 7.0


def test_batches_from_reused_blocks_stay_intact_while_held_and_equal_the_one_process_batches(small_lmdb):
    """Workers write into reused shared blocks: a batch (or a view of it) the caller keeps is never
    written over, and every batch is the one a loader without workers makes."""
    import fastload

    kwargs = dict(batch_size=4, augment="train", image_size=24, backend="torch", device="cpu", seed=3, shuffle=True)
    loader = fastload.Loader(small_lmdb, num_threads=2, **kwargs)
    reference = fastload.Loader(small_lmdb, num_threads=0, **kwargs)
    held, views, copies, pointers = [], [], [], set()
    for epoch in range(2):  # many more batches than blocks
        loader.set_epoch(epoch)
        reference.set_epoch(epoch)
        for k, ((images, labels), (ref, ref_labels)) in enumerate(zip(loader, reference)):
            assert torch.equal(images, ref) and torch.equal(labels, ref_labels)
            copies.append(images.clone())
            pointers.add(images.data_ptr())
            held.append(images if k % 2 else None)
            views.append(images[1:3].permute(0, 2, 3, 1) if k % 3 == 0 else None)
    blocks = {t.data_ptr() for t in loader._get_backend()._all[0].sampler.slots._tensors}
    assert pointers & blocks  # the blocks were in use
    for batch, view, copy in zip(held, views, copies):
        if batch is not None:
            assert torch.equal(batch, copy)
        if view is not None:
            assert torch.equal(view, copy[1:3].permute(0, 2, 3, 1))
    loader.close()


def _darker(x):
    return x * 0.5


def _top_half(x):
    return x[: x.shape[0] // 2]


@pytest.mark.parametrize("custom, size", [(_darker, 24), (_top_half, 12)])
def test_custom_ops_use_the_reused_blocks_or_fall_back_when_they_change_the_size(small_lmdb, custom, size):
    """A custom op is taken to keep the size, so the workers write into the reused blocks (a
    fresh shared batch each step cost the training thread ~3 ms); one that changes it gets fresh
    memory for its batches, which are still right."""
    import fastload

    op = fastload.op(custom)
    kwargs = dict(batch_size=4, augment=[fastload.ops.RandomResizedCrop(24), fastload.ops.Normalize(), op],
                  backend="torch", device="cpu", seed=3)
    loader = fastload.Loader(small_lmdb, num_threads=2, **kwargs)
    reference = fastload.Loader(small_lmdb, num_threads=0, **kwargs)
    pointers = set()
    for (images, _), (ref, _) in zip(loader, reference):
        assert images.shape[-2:] == (size, 24) and torch.equal(images, ref)
        pointers.add(images.data_ptr())
    blocks = {t.data_ptr() for t in loader._get_backend()._all[0].sampler.slots._tensors}
    assert bool(pointers & blocks) == (size == 24)
    loader.close()


def _passes(loader, plan) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Drive ``loader`` through ``plan``: ("epoch", n) takes n batches of a pass (None: all of it),
    ("set_epoch", e) moves it; returns each pass's batches."""
    out = []
    for what, n in plan:
        if what == "set_epoch":
            loader.set_epoch(n)
            continue
        batches = []
        for images, labels in loader:
            batches.append((images.clone(), labels.clone()))
            if n is not None and len(batches) == n:
                break
        out.append(batches)
    return out


@pytest.mark.parametrize("batch_size", [4, 8, 16])  # 6 batches an epoch, 3, 2: guesses one and two epochs ahead
def test_workers_go_on_into_the_next_epoch_and_every_pass_gets_its_own_batches(small_lmdb, batch_size):
    """As a pass ends, the workers go on into the epochs expected next (a DataLoader idles at each
    epoch's end: 3-batch epochs ran at 71% of a long epoch's rate): the tasks for the next epoch
    are sent before it begins, and every pass, the expected ones and the others (a break mid-epoch,
    ``set_epoch`` elsewhere, the same epoch again), gets the batches a loader without workers gives."""
    import fastload

    kwargs = dict(batch_size=batch_size, augment="train", image_size=24, backend="torch", device="cpu", seed=3,
                  shuffle=True)
    loader = fastload.Loader(small_lmdb, num_threads=2, **kwargs)
    reference = fastload.Loader(small_lmdb, num_threads=0, **kwargs)
    first = _passes(loader, [("epoch", None)])
    backend = loader._get_backend()
    data_loader = backend._all[0]
    assert data_loader._iterator._send_idx > len(first[0])  # the next epoch's tasks went out as it ended
    plan = [("epoch", None), ("epoch", None), ("epoch", 1), ("epoch", None), ("set_epoch", 7), ("epoch", None),
            ("epoch", 2), ("epoch", None), ("epoch", None)]
    got = first + _passes(loader, plan)
    expected = _passes(reference, [("epoch", None)] + plan)
    assert backend._running[id(data_loader)].guesses[0][0][0] == 7  # pinned: the guesses repeat the epoch
    assert [len(p) for p in got] == [len(p) for p in expected]
    for mine, theirs in zip(got, expected):
        for (images, labels), (ref, ref_labels) in zip(mine, theirs):
            assert torch.equal(images, ref) and torch.equal(labels, ref_labels)
    assert len(backend._all) == 1  # one DataLoader, its workers kept
    loader.close()
