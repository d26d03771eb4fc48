"""The torch backend's finish (fastload.output.finish_tensor): normalize + layout in one output
allocation, made in shared memory inside DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from fastload import ops
from fastload.output import OutputSpec, batch_tensor, finish_tensor


def _reference(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, nchw: bool) -> torch.Tensor:
    """What the finish computed before it wrote into the output: four passes, four batches."""
    out = (images.float() - mean) / std
    return (out.permute(0, 3, 1, 2) if nchw else out).contiguous()


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("pixels", ["uint8", "int32"])  # int32 carries 16-bit images
def test_normalized_output_is_bit_for_bit_the_four_pass_result(layout, pixels):
    rng = np.random.default_rng(0)
    high, pixel = (256, "uint8") if pixels == "uint8" else (65536, "uint16")
    images = torch.from_numpy(rng.integers(0, high, (4, 24, 20, 3)).astype(pixels))
    spec = OutputSpec(layout=layout, pixel_dtype=pixel, normalize=ops.Normalize())
    out = finish_tensor(images, spec)
    mean, std = (torch.as_tensor(a) for a in spec.mean_std(3, images.dtype))
    expected = _reference(images, mean, std, layout == "NCHW")
    assert out.shape == expected.shape and out.is_contiguous() and out.dtype == torch.float32
    assert torch.equal(out, expected)


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
