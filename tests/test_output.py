"""The output stage (fastload.output): one spec, checked at construction, and kernels that agree."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from reference import normalized

import fastload
from fastload import ops
from fastload.output import (
    BatchWriter,
    OutputSpec,
    finish_sample,
    finish_tensor,
    split_normalize,
    to_channels,
    write_samples,
)
from fastload.pixels import affine_planes, planes_of, to_planes


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": "float64"}, "output_dtype must be one of"),
    ({"layout": "CHW"}, "layout must be one of"),
    ({"channels": 0}, "at least one channel"),
    ({"channels": 4, "normalize": ops.Normalize(mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))}, "3/3 values for 4-channel"),
])
def test_a_spec_is_refused_at_construction_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OutputSpec(**kwargs)


def test_uint8_output_is_not_normalized():
    assert OutputSpec(dtype="uint8", normalize=ops.Normalize()).normalize is None


def test_split_normalize_takes_only_a_trailing_normalize():
    crop, norm = ops.CenterCrop(8), ops.Normalize()
    assert split_normalize([crop, norm]) == ([crop], norm)
    assert split_normalize([norm, crop]) == ([norm, crop], None)
    assert split_normalize([]) == ([], None)


def test_dali_arguments_say_the_same_output():
    spec = OutputSpec(layout="NHWC", pixel_dtype="uint16", normalize=ops.Normalize(mean=(0.5,), std=(0.25,)),
                      channels=1)
    assert spec.dali_args() == {"dtype": "FLOAT", "output_layout": "HWC", "mean": [0.5 * 65535], "std": [0.25 * 65535]}
    assert OutputSpec(dtype="float16", channels=2).dali_args() == {
        "dtype": "FLOAT16", "output_layout": "CHW", "mean": [0.0, 0.0], "std": [1.0, 1.0]}
    assert OutputSpec(dtype="uint8", pixel_dtype="uint16").dali_args() == {
        "dtype": "UINT8", "output_layout": "CHW", "scale": 255.0 / 65535.0}
    assert OutputSpec(dtype="uint8").dali_args() == {"dtype": "UINT8", "output_layout": "CHW"}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
@pytest.mark.parametrize("pixels", ["uint8", "uint16"])
def test_the_host_and_torch_kernels_write_the_same_batch(layout, dtype, pixels):
    """The host stage's NumPy writer and the torch backend's kernel: one output, bit for bit."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, np.iinfo(pixels).max + 1, (3, 6, 5, 3)).astype(pixels)
    spec = OutputSpec(dtype=dtype, layout=layout, pixel_dtype=pixels, normalize=ops.Normalize())
    writer = BatchWriter(np, torch.device("cpu"), 3, spec)
    writer.reserve(6, 5, 3, np.dtype(pixels))
    writer.put_range(0, images)
    carried = torch.from_numpy(images.astype(np.int32) if pixels == "uint16" else images)  # as the workers send it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the spec's shared (read-only) mean/std arrays are copied for torch
        expected = finish_tensor(carried, spec)
    assert writer.tensor.dtype == expected.dtype and writer.tensor.shape == expected.shape == spec.shape(3, 6, 5)
    assert torch.equal(writer.tensor, expected)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
@pytest.mark.parametrize("pixels", ["uint8", "uint16", "float32"])
def test_samples_of_any_strides_are_written_as_the_torch_kernel_finishes_their_stack(layout, dtype, pixels):
    """The torch backend's workers write op results as they come (a resize's channel planes, a
    flip's negative strides, plain HWC): the same batch as stacking them and finish_tensor."""
    rng = np.random.default_rng(1)
    top = 1.0 if pixels == "float32" else np.iinfo(pixels).max + 1
    planes = (rng.random((3, 6, 5)) * top).astype(pixels)
    samples = [planes.transpose(1, 2, 0), (rng.random((6, 5, 3)) * top).astype(pixels)[::-1, ::-1],
               (rng.random((6, 5, 3)) * top).astype(pixels)]
    spec = OutputSpec(dtype=dtype, layout=layout, pixel_dtype=pixels, normalize=ops.Normalize())
    stacked = np.stack(samples)
    expected = finish_tensor(torch.from_numpy(stacked.astype(np.int32) if pixels == "uint16" else stacked), spec)
    written = write_samples(samples, spec)
    assert written.dtype == expected.dtype and written.shape == expected.shape == spec.shape(3, 6, 5)
    assert torch.equal(written, expected)


class _WrittenInWorker(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> bool:
        spec = OutputSpec(normalize=ops.Normalize())
        return write_samples([np.zeros((4, 4, 3), np.uint8)], spec).is_shared()


def test_a_batch_written_in_a_dataloader_worker_is_made_in_shared_memory():
    """So it crosses to the training process without torch copying it there."""
    loader = torch.utils.data.DataLoader(_WrittenInWorker(), batch_size=None, num_workers=1)
    assert list(loader) == [True]


def test_one_sample_is_finished_as_the_loader_finishes_it():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = finish_sample(image, OutputSpec(normalize=ops.Normalize(mean=(0.5,), std=(0.5,))))
    assert out.shape == (3, 2, 3) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), (image.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5, rtol=1e-6)


def test_one_16_bit_sample_is_brought_to_uint8_output_by_the_ranges_as_a_batch_is():
    image = np.array([[[0, 257, 65535], [128, 32896, 65534]]], np.uint16)  # 1x2x3
    spec = OutputSpec(dtype="uint8", layout="NHWC", pixel_dtype="uint16")
    out = finish_sample(image, spec)
    assert out.dtype == torch.uint8 and out.shape == (1, 2, 3)
    assert np.array_equal(out.numpy(), np.rint(image * (255 / 65535)).astype(np.uint8))  # not wrapped mod 256
    assert torch.equal(out, write_samples([image], spec)[0])


def test_gray_images_are_repeated_into_the_channels_and_other_counts_refused():
    gray = np.ones((2, 2, 1), np.uint8)
    assert to_channels(gray, 3, "record 0").shape == (2, 2, 3)
    with pytest.raises(ValueError, match="record 7 has 2 channels, the loader expects 3"):
        to_channels(np.ones((2, 2, 2), np.uint8), 3, "record 7")


def test_the_host_stage_writes_into_a_batch_nobody_holds_and_never_into_a_kept_one():
    """The CPU host stage reuses an output batch once the caller dropped it: a fresh batch per
    step cost page faults worth ~30% of the CPU time of a 6-channel list (perf: clear_page in the
    cast that writes the batch), after a refactor left every batch referenced by its own check."""
    from fastload.backends.dali.host import HostFinish
    from fastload.backends.dali.params import ParamLayout

    head = [ops.CenterCrop(8)]
    spec = OutputSpec(dtype="float32", layout="NCHW", channels=3, pixel_dtype="uint8")
    host = HostFinish(head, ParamLayout(head), cut=False, threads=1, output=spec)
    params = np.zeros((2, 0), np.float32)

    def batch(value):
        return host([np.full((10, 12, 3), value, np.uint8)] * 2, params)

    kept = batch(1)
    second = batch(2)
    assert second.data_ptr() != kept.data_ptr()  # a kept batch is never written over
    address = second.data_ptr()
    del second
    third = batch(3)
    assert third.data_ptr() == address  # the dropped one is written again (it was kept alive, not freed)
    assert (kept == 1).all() and (third == 3).all()


@fastload.op
def _rows_from_first_pixel(x):  # the size comes from the pixels: samples of a batch may disagree
    return x[: 4 + int(x[0, 0, 0]) % 2]


@pytest.mark.parametrize("threads", [1, 2])
def test_the_host_stage_sizes_a_batch_from_a_custom_op_in_every_thread_and_names_a_sample_that_disagrees(threads):
    """Where a custom op decides the size, each thread starts at once and the first sample done
    sizes the batch (no first sample run alone while the other threads wait)."""
    from fastload.backends.dali.host import HostFinish
    from fastload.backends.dali.params import ParamLayout

    head = [ops.CenterCrop(8), _rows_from_first_pixel]
    spec = OutputSpec(dtype="uint8", layout="NHWC", channels=3, pixel_dtype="uint8")
    host = HostFinish(head, ParamLayout(head), cut=False, threads=threads, output=spec)
    params = np.zeros((4, 0), np.float32)
    out = host([np.full((10, 12, 3), 2, np.uint8)] * 4, params)
    assert out.shape == (4, 4, 8, 3) and (out == 2).all()
    odd = [np.full((10, 12, 3), value, np.uint8) for value in (2, 2, 2, 3)]  # record 3 comes out 5 rows
    # the record named is one that differs from the sample done first (with threads, either side)
    with pytest.raises(ValueError, match=r"record [0-3] \(epoch 0, seed 0\) came out of the ops .* one size"):
        host(odd, params)


_BOTH_SHARES = threading.Barrier(2, timeout=60)


@fastload.op
def _met_by_both_shares(x):  # passes only when the two threads' samples run at the same time
    _BOTH_SHARES.wait()
    return x[:4]


def test_the_host_stage_runs_a_size_deciding_custom_op_in_every_thread_at_once():
    """A custom op that decides the size no longer makes the batch's first sample run alone on the
    calling thread (1/64 of a batch serial: a quarter of 16 threads' time at batch 64)."""
    from fastload.backends.dali.host import HostFinish
    from fastload.backends.dali.params import ParamLayout

    head = [ops.CenterCrop(8), _met_by_both_shares]
    spec = OutputSpec(dtype="uint8", layout="NHWC", channels=3, pixel_dtype="uint8")
    host = HostFinish(head, ParamLayout(head), cut=False, threads=2, output=spec)
    out = host([np.full((10, 12, 3), 7, np.uint8)] * 2, np.zeros((2, 0), np.float32))
    assert out.shape == (2, 4, 8, 3) and (out == 7).all()


def test_the_host_stage_gives_the_same_batch_on_one_thread_and_on_many():
    """Many threads take samples one at a time, the largest image first (run_chunks' cost order):
    the batch is the one a single thread writes in order."""
    from fastload.backends.dali.host import HostFinish
    from fastload.backends.dali.params import ParamLayout

    head = [ops.Resize(size=(6, 5)), ops.Flip()]
    spec = OutputSpec(dtype="float32", layout="NCHW", channels=3, pixel_dtype="uint8", normalize=ops.Normalize())
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (8 + 3 * k % 11, 9 + 5 * k % 7, 3), dtype=np.uint8) for k in range(12)]
    params = np.array([[k % 2, 0] for k in range(12)], np.float32)  # every other image flipped
    batches = [HostFinish(head, ParamLayout(head), cut=False, threads=threads, output=spec)(images, params).clone()
               for threads in (1, 8)]
    assert torch.equal(batches[0], batches[1])
    expected = np.stack([ops.Flip().apply(ops.Resize(size=(6, 5)).apply(x, None), (bool(k % 2), False))
                         for k, x in enumerate(images)])
    mean, std = ops.normalize.resolve_mean_std(None, None, 3)
    expected = normalized(expected, mean * np.float32(255), std * np.float32(255)).transpose(0, 3, 1, 2)
    assert np.array_equal(batches[1].numpy(), expected)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "int64"])  # int64: no OpenCV type
@pytest.mark.parametrize("channels", [1, 3, 6])
def test_samples_go_into_channel_planes_of_a_batch_whatever_their_strides(dtype, channels):
    rng = np.random.default_rng(channels)
    samples = (rng.random((2, 7, 9, channels)) * 200).astype(dtype)
    for read_next in (False, True):
        batch = np.zeros((3, channels, 7, 9), dtype)
        to_planes(samples, batch[1:], read_next=read_next)  # a slice of a batch, as the host stage stages
        assert np.array_equal(batch[1:], samples.transpose(0, 3, 1, 2)) and not batch[0].any()
    planar = np.ascontiguousarray(samples.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)  # planes seen HWC
    for one in (samples[1], samples[1, ::-1], planar[1]):
        assert np.array_equal(to_planes(one, np.empty((channels, 7, 9), dtype)), one.transpose(2, 0, 1))
    assert np.shares_memory(planes_of(planar), planar)  # planes already: no copy


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("size", [(6, 5), (16, 20)])  # under and over the 64-pixel rows OpenCV's vector loop takes
def test_the_normalize_is_one_fused_multiply_add_on_every_path(dtype, size):
    """NumPy's planes (OpenCV, or float64 where it would round twice) and torch's addcmul: the same bits."""
    rng = np.random.default_rng(3)
    full = 1.0 if dtype == "float32" else np.iinfo(dtype).max
    images = (rng.random((4, *size, 3)) * full).astype(dtype)
    mean, std = (np.float32(v) * np.float32(full) for v in (ops.normalize.IMAGENET_MEAN, ops.normalize.IMAGENET_STD))
    scale, shift = ops.normalize.scale_shift(mean, std)
    expected = normalized(images, mean, std)
    batch = np.zeros((6, 3, *size), np.float32)
    affine_planes(np.ascontiguousarray(images.transpose(0, 3, 1, 2)), scale, shift, out=batch[1:5])
    assert np.array_equal(batch[1:5], expected.transpose(0, 3, 1, 2)) and not batch[0].any() and not batch[5].any()
    one = affine_planes(planes_of(images[2]), scale, shift, out=np.empty((3, *size), np.float32))
    assert np.array_equal(one, expected[2].transpose(2, 0, 1))
    carried = torch.from_numpy(images.astype(np.float32))  # exact: 8/16-bit pixels fit float32
    assert np.array_equal(torch.addcmul(torch.from_numpy(shift), carried, torch.from_numpy(scale)).numpy(), expected)
    np.testing.assert_allclose(expected, (images.astype(np.float64) - mean) / std, rtol=0, atol=1e-6)
