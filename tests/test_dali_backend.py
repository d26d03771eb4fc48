"""The DALI backend through the Loader: CPU mode always (DALI runs without a GPU); GPU twins
run where CUDA is present. Coverage, order and resume are in test_loader.py for both backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from storefiles import flip_byte_in_record

import fastload
from fastload import ops
from fastload.loader import dali_available
from fastload.ops.library import GaussianNoise, HistogramEqualization
from fastload.sample import SampleSpec, make_sample_folder

pytestmark = pytest.mark.skipif(not dali_available(), reason="DALI not installed")


def _batches(store, backend, device="cpu", **kw):
    kw.setdefault("batch_size", 8)
    loader = fastload.Loader(store, backend=backend, device=device, num_threads=1, **kw)
    images, labels = zip(*loader)
    return torch.cat(images).cpu(), torch.cat(labels).cpu()


@pytest.mark.parametrize("fixture", ["small_lmdb", "small_h5"])
def test_eval_close_to_torch_backend_on_both_formats(fixture, request):
    store = request.getfixturevalue(fixture)
    ref, ref_labels = _batches(store, "torch", augment="eval", image_size=32)
    out, labels = _batches(store, "dali", augment="eval", image_size=32)
    assert torch.equal(labels, ref_labels)
    diff = (out - ref).abs()
    # Same decoder output and crop window; the resamplers differ (OpenCV area vs DALI's
    # antialiased linear): about one grey level on average.
    assert diff.mean().item() < 0.05 and diff.max().item() < 1.5, (diff.mean(), diff.max())


@pytest.mark.parametrize("output_dtype,layout,shape", [
    ("float32", "NCHW", (8, 3, 32, 32)), ("float16", "NHWC", (8, 32, 32, 3)), ("uint8", "NCHW", (8, 3, 32, 32)),
])
def test_train_output_formats(small_lmdb, output_dtype, layout, shape):
    loader = fastload.Loader(small_lmdb, batch_size=8, augment="train", image_size=32, backend="dali",
                             device="cpu", num_threads=1, output_dtype=output_dtype, layout=layout)
    images, labels = next(iter(loader))
    assert tuple(images.shape) == shape
    assert images.dtype == {"float32": torch.float32, "float16": torch.float16, "uint8": torch.uint8}[output_dtype]
    assert labels.dtype == torch.int64 and labels.shape == (8,)


def test_train_augmentation_replays_from_seed(small_lmdb):
    a = _batches(small_lmdb, "dali", augment="train", image_size=32, shuffle=True, seed=3)[0]
    b = _batches(small_lmdb, "dali", augment="train", image_size=32, shuffle=True, seed=3)[0]
    c = _batches(small_lmdb, "dali", augment="train", image_size=32, shuffle=True, seed=4)[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sixteen_bit_store_keeps_depth(tmp_path):
    make_sample_folder(tmp_path / "xray", SampleSpec(num_classes=2, per_class=3, short_side=(40, 56),
                                                     image_format="png16"), workers=1)
    fastload.pack(tmp_path / "xray", options=fastload.PackOptions(workers=1, progress=False))
    images, _ = _batches(tmp_path / "xray.lmdb", "dali", augment=[ops.RandomResizedCrop(32), ops.Flip(),
                                                                     ops.Normalize()], batch_size=6)
    assert images.shape == (6, 1, 32, 32)
    assert all(len(torch.unique(images[i])) > 256 for i in range(6))


def test_raw_store_skips_decode_and_matches_encoded(small_folder, small_lmdb, tmp_path):
    raw = tmp_path / "raw.lmdb"
    fastload.pack(small_folder, raw, options=fastload.PackOptions(workers=1, progress=False, payload="raw"))
    encoded, _ = _batches(small_lmdb, "dali", augment="eval", image_size=32)
    decoded, _ = _batches(raw, "dali", augment="eval", image_size=32)
    assert torch.equal(encoded, decoded)


def test_custom_ops_match_torch_backend(small_lmdb):
    augment = [ops.CenterCrop(24), GaussianNoise(sigma=10.0), HistogramEqualization(), ops.Normalize()]
    ref, _ = _batches(small_lmdb, "torch", augment=augment)
    out, _ = _batches(small_lmdb, "dali", augment=augment)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-4)


def test_corrupt_record_named_not_wrapped(small_folder, tmp_path):
    out = str(tmp_path / "bad.lmdb")
    fastload.pack(small_folder, out, options=fastload.PackOptions(workers=1, progress=False))
    flip_byte_in_record(out, 4)
    loader = fastload.Loader(out, batch_size=4, augment="eval", image_size=16, backend="dali", device="cpu",
                             num_threads=1)
    with pytest.raises(fastload.CorruptRecordError, match="record 4"):
        list(loader)


@pytest.mark.gpu
def test_gpu_eval_matches_cpu(small_lmdb):
    cpu, _ = _batches(small_lmdb, "dali", augment="eval", image_size=32)
    gpu, _ = _batches(small_lmdb, "dali", device="cuda", augment="eval", image_size=32)
    # nvJPEG and libjpeg-turbo differ by a few grey levels (IDCT and chroma upsampling).
    assert (gpu - cpu).abs().mean().item() < 0.1


@pytest.mark.gpu
def test_gpu_custom_op_runs_as_cupy(small_lmdb):
    augment = [ops.CenterCrop(24), GaussianNoise(sigma=5.0), ops.Normalize()]
    images, _ = _batches(small_lmdb, "dali", device="cuda", augment=augment)
    assert images.shape == (24, 3, 24, 24)
