"""The batch stage (fastload.transforms): mixup, cutmix and random erasing on whole batches, their
configs, the DALI backend's tail of custom ops, and every preset x output dtype x layout on both
backends. GPU twins are marked ``gpu``: ``python -m pytest -m gpu`` runs them where CUDA is."""

from __future__ import annotations

import functools
import time

import cv2
import numpy as np
import pytest
import torch
from reference import normalized

import fastload
from fastload import ops, transforms
from fastload.loader import dali_available
from fastload.ops import CustomOpError
from fastload.ops.normalize import IMAGENET_MEAN, IMAGENET_STD
from fastload.output import OutputSpec
from fastload.transforms import CutMix, Mixup, RandomErasing, batch_generator

BACKENDS = ["torch"] + (["dali"] if dali_available() else [])
needs_dali = pytest.mark.skipif(not dali_available(), reason="DALI not installed")


# --- custom ops and a batch transform, at module level so configs can name them ----------------
@fastload.op
def add_noise(x, rng, sigma=0.05):  # the README's op
    xp = fastload.array_namespace(x)
    return x + sigma * xp.asarray(rng.standard_normal(x.shape), dtype=x.dtype)


@fastload.op(vectorized=True)
def add_noise_batched(x, rng, sigma=0.05):  # the same body, declared vectorized
    xp = fastload.array_namespace(x)
    return x + sigma * xp.asarray(rng.standard_normal(x.shape), dtype=x.dtype)


@fastload.op
def jitter(x, rng, amount=20):
    """uint8 in, uint8 out: a random shift per channel."""
    xp = fastload.array_namespace(x)
    shift = xp.asarray(rng.integers(-amount, amount + 1, size=x.shape[-1]))
    return xp.clip(x.astype(xp.int16) + shift, 0, 255).astype(xp.uint8)


@fastload.batch_op
def centre_batch(images, rng):
    """Subtract the batch's mean and add one random offset per batch."""
    xp = fastload.array_namespace(images[0])
    mean = sum(float(x.astype(xp.float64).mean()) for x in images) / len(images)
    shift = xp.float32(rng.uniform(-0.5, 0.5) - mean)
    return [(x + shift).astype(x.dtype) for x in images]


@fastload.op
def broken(x, rng):
    raise ValueError("no good")


@fastload.op(vectorized=True)
def broken_batched(x, rng):
    raise ValueError("no good either")


@fastload.batch_op
def broken_batch(images, rng):
    raise ValueError("not this batch")


def swap_halves(images, labels, rng):
    """A plain-function batch transform: roll the batch by half (images and labels together)."""
    shift = images.shape[0] // 2
    return images.roll(shift, 0), labels.roll(shift, 0)


# --- small batches made by hand ------------------------------------------------------------------
def _batch(n=6, c=3, h=12, w=10, layout="NCHW", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, c, h, w, generator=g) + 1.0  # never 0: an erased pixel always changes
    if dtype == torch.uint8:
        images = (images * 100).to(torch.uint8)
    images = images.to(dtype)
    if layout == "NHWC":
        images = images.permute(0, 2, 3, 1).contiguous()
    labels = torch.arange(n) % 4  # neighbours in the reversed batch differ for n=6
    return images, labels


def _rng(batch=0, epoch=0, seed=7, salt=0):
    return batch_generator(seed, epoch, batch, salt, torch.device("cpu"))


def _box(changed: torch.Tensor) -> tuple[slice, slice] | None:
    """The rectangle a (H, W) boolean mask fills, asserting it fills exactly one."""
    if not changed.any():
        return None
    rows, cols = changed.any(1).nonzero().ravel(), changed.any(0).nonzero().ravel()
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    assert changed[box].all() and int(changed.sum()) == changed[box].numel(), "not one filled rectangle"
    return box


def _hw(images: torch.Tensor, layout: str) -> torch.Tensor:
    """NHWC view of a batch (so boxes read the same in both layouts)."""
    return images.permute(0, 2, 3, 1) if layout == "NCHW" else images


# --- Mixup ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_mixup_is_the_convex_mix_of_each_sample_and_its_partner(dtype):
    images, labels = _batch(dtype=dtype)
    out, soft = Mixup(alpha=0.4, num_classes=4)(images, labels, _rng())
    assert soft.shape == (6, 4) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    lam = soft[0, labels[0]].item()  # labels[0] != labels[5]: the weight of its own class
    assert 0.0 < lam < 1.0
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    torch.testing.assert_close(soft, lam * onehot + (1 - lam) * onehot.flip(0))
    expected = (images.float() * lam + images.flip(0).float() * (1 - lam)).to(dtype)
    torch.testing.assert_close(out, expected, atol=0 if dtype == torch.float32 else 1e-3, rtol=1e-6)
    assert out.dtype == dtype and out.shape == images.shape


def test_mixup_of_uint8_rounds_and_label_smoothing_still_sums_to_one():
    images, labels = _batch(dtype=torch.uint8)
    out, soft = Mixup(alpha=1.0, num_classes=4, label_smoothing=0.1)(images, labels, _rng(3))
    assert out.dtype == torch.uint8
    torch.testing.assert_close(soft.sum(1), torch.ones(6))
    assert soft.min() > 0  # smoothing reaches every class
    own = soft[0, labels[0]] + soft[5, labels[0]]  # sample 0's class, in 0 and its partner 5
    assert abs(own.item() - (0.9 + 2 * 0.025)) < 1e-5  # (1 - eps) + 2 * eps / classes


def test_mixup_and_cutmix_with_p_zero_leave_images_unchanged():
    images, labels = _batch()
    for transform in (Mixup(p=0.0, num_classes=4), CutMix(p=0.0, num_classes=4)):
        out, soft = transform(images, labels, _rng())
        assert torch.equal(out, images)
        assert torch.equal(soft, torch.nn.functional.one_hot(labels, 4).float())


def test_binding_fills_num_classes_or_says_at_once_that_it_is_missing():
    bound = transforms.base.bind_transforms([Mixup(), CutMix(num_classes=7), RandomErasing(), swap_halves], 3)
    assert bound == [Mixup(num_classes=3), CutMix(num_classes=7), RandomErasing(), swap_halves]
    with pytest.raises(ValueError, match=r"store names no classes: give CutMix\(num_classes=...\)"):
        transforms.base.bind_transforms([CutMix()], None)


def test_mix_needs_num_classes_and_refuses_unlabelled_samples():
    images, labels = _batch()
    with pytest.raises(ValueError, match="num_classes"):
        Mixup()(images, labels, _rng())
    with pytest.raises(ValueError, match="unlabelled"):
        Mixup(num_classes=4)(images, torch.full((6,), -1), _rng())
    with pytest.raises(ValueError, match="alpha"):
        Mixup(alpha=0)


def test_draws_replay_per_seed_epoch_and_batch_and_differ_otherwise():
    images, labels = _batch()
    mix = Mixup(alpha=1.0, num_classes=4)

    def lam(**kw):
        return mix(images, labels, _rng(**kw))[1][0, labels[0]].item()

    assert lam(batch=2, epoch=1) == lam(batch=2, epoch=1)
    assert len({lam(batch=b) for b in range(4)} | {lam(epoch=1), lam(seed=8), lam(salt=1)}) == 7


# --- CutMix -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_cutmix_pastes_one_box_from_the_partner_and_mixes_labels_by_its_area(layout):
    images, labels = _batch(layout=layout)
    seen = 0
    for b in range(8):
        out, soft = CutMix(alpha=1.0, num_classes=4)(images, labels, _rng(b))
        x, y = _hw(images, layout), _hw(out, layout)
        box = _box((y != x).any(-1)[0])
        for i in range(6):  # the same box in every sample, filled from its partner
            assert _box((y != x).any(-1)[i]) == box
        if box is None:
            assert torch.equal(soft, torch.nn.functional.one_hot(labels, 4).float())
            continue
        seen += 1
        assert torch.equal(y[:, box[0], box[1]], x.flip(0)[:, box[0], box[1]])
        area = y[0, box[0], box[1], 0].numel() / (12 * 10)
        torch.testing.assert_close(soft.sum(1), torch.ones(6))
        assert abs(soft[0, labels[0]].item() - (1 - area)) < 1e-6
        assert abs(soft[0, labels[5]].item() - area) < 1e-6
    assert seen >= 6  # lam ~ U(0, 1): boxes are rarely empty


def test_cutmix_gives_the_same_box_in_both_layouts_and_dtypes():
    nchw, labels = _batch()
    nhwc = nchw.permute(0, 2, 3, 1).contiguous()
    a, la = CutMix(num_classes=4)(nchw, labels, _rng(1))
    b, lb = CutMix(num_classes=4)(nhwc, labels, _rng(1))
    assert torch.equal(a.permute(0, 2, 3, 1), b) and torch.equal(la, lb)
    u8, _ = _batch(dtype=torch.uint8)
    c, lc = CutMix(num_classes=4)(u8, labels, _rng(1))
    assert c.dtype == torch.uint8 and torch.equal(lc, la)


def test_layout_is_given_not_guessed_for_many_channels_or_tiny_images():
    """32 channels NCHW and 6 channels of 4x4 NHWC: the transforms take the layout they are told."""
    g = torch.Generator().manual_seed(0)
    nchw = torch.rand(4, 32, 8, 8, generator=g) + 1
    nhwc = torch.rand(4, 4, 4, 6, generator=g) + 1
    for images, layout in ((nchw, "NCHW"), (nhwc, "NHWC")):
        out, _ = CutMix(num_classes=2, layout=layout)(images, torch.tensor([0, 1, 1, 0]), _rng(2))
        changed = (_hw(out, layout) != _hw(images, layout))
        assert torch.equal(changed.all(-1), changed.any(-1))  # whole pixels (all channels) pasted
        erased, _ = RandomErasing(p=1.0, layout=layout)(images, torch.zeros(4), _rng(2))
        changed = (_hw(erased, layout) != _hw(images, layout))
        assert torch.equal(changed.all(-1), changed.any(-1)) and changed.any()
    with pytest.raises(ValueError, match="layout"):
        Mixup(layout="CHW")


def test_batches_of_test_time_views_keep_each_box_on_the_image_axes():
    """(B, V, C, H, W) batches (fastload.tta): boxes span H and W, the same in every view."""
    images, labels = _batch(n=4, h=8, w=8)
    views = torch.stack([images, images.flip(-1)], dim=1)  # (4, 2, 3, 8, 8)
    for transform in (CutMix(num_classes=4, layout="NCHW"), RandomErasing(p=1.0, layout="NCHW")):
        out, _ = transform(views, labels, _rng(5))
        changed = (out != views).any(2)  # (4, 2, 8, 8)
        assert torch.equal(changed, (out != views).all(2)) and changed.any()
        assert torch.equal(changed[:, 0], changed[:, 1])


# --- RandomErasing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_random_erasing_one_box_per_sample_with_probability_p(layout):
    n, p = 2000, 0.3
    images, labels = _batch(n=n, h=16, w=16, layout=layout)
    out, same = RandomErasing(p=p, scale=(0.05, 0.25), value=0.0)(images, labels, _rng())
    assert same is labels
    x, y = _hw(images, layout), _hw(out, layout)
    changed = (y != x).any(-1)
    assert torch.equal(changed, (y != x).all(-1))  # every channel of a pixel, or none
    erased = 0
    for i in range(n):
        box = _box(changed[i])
        if box is None:
            continue
        erased += 1
        assert (y[i, box[0], box[1]] == 0).all()
        area = changed[i].sum().item() / 256
        assert 0.02 <= area <= 0.3, area  # scale 0.05-0.25, give or take the rounding of the sides
    assert abs(erased / n - p) < 4 * (p * (1 - p) / n) ** 0.5  # 4 sigma
    assert torch.equal(y[~changed], x[~changed])  # untouched outside the boxes


def test_random_erasing_random_fill_and_replay():
    images, labels = _batch(n=64, layout="NHWC")
    a, _ = RandomErasing(p=1.0, value="random")(images, labels, _rng(4))
    b, _ = RandomErasing(p=1.0, value="random")(images, labels, _rng(4))
    assert torch.equal(a, b)
    changed = (a != images).any(-1)
    assert changed.any(-1).any(-1).all()  # p=1: every sample has a box
    assert a[changed].min() < 0 < a[changed].max()  # standard-normal noise
    assert torch.equal(RandomErasing(p=0.0)(images, labels, _rng(4))[0], images)
    with pytest.raises(ValueError, match="value"):
        RandomErasing(value="noise")


# --- configs -----------------------------------------------------------------------------------------
ALL = [Mixup(alpha=0.3, num_classes=3, label_smoothing=0.1), CutMix(p=0.5),
       RandomErasing(p=0.25, scale=(0.02, 0.2), value="random"), swap_halves]


def test_config_round_trip(tmp_path):
    config = transforms.transforms_to_config(ALL)
    assert config[-1] == {"transform": "function", "function": f"{__name__}:swap_halves"}
    assert transforms.transforms_from_config(config) == ALL
    for name in ("t.json", "t.yaml"):
        transforms.save_transforms(ALL, tmp_path / name)
        assert transforms.transforms_from_config(tmp_path / name) == ALL
    (tmp_path / "nested.yaml").write_text("batch_transforms:\n  - {transform: CutMix, alpha: 0.5}\n")
    assert transforms.transforms_from_config(str(tmp_path / "nested.yaml")) == [CutMix(alpha=0.5)]


def test_config_errors_name_the_entry():
    with pytest.raises(ValueError, match="unknown transform 'Blur'"):
        transforms.transforms_from_config([{"transform": "Blur"}])
    with pytest.raises(ValueError, match="entry 0 must be a mapping"):
        transforms.transforms_from_config(["Mixup"])
    with pytest.raises(ValueError, match="module level"):
        transforms.transforms_to_config([lambda images, labels, rng: (images, labels)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_loader_takes_a_yaml_file_and_binds_num_classes(small_lmdb, tmp_path, backend):
    path = tmp_path / "batch.yaml"
    transforms.save_transforms([CutMix(), swap_halves], path)
    kw = dict(batch_size=6, augment="eval", image_size=16, backend=backend, device="cpu",
              num_threads=0 if backend == "torch" else 1, seed=1)
    from_file = fastload.Loader(small_lmdb, batch_transforms=str(path), **kw)
    assert from_file.batch_transforms == [CutMix(num_classes=3), swap_halves]
    from_list = fastload.Loader(small_lmdb, batch_transforms=[CutMix(), swap_halves], **kw)
    (a, la), (b, lb) = next(iter(from_file)), next(iter(from_list))
    assert torch.equal(a, b) and torch.equal(la, lb) and la.shape == (6, 3)


# --- through the Loader -------------------------------------------------------------------------------
def _loader(store, backend, **kw):
    kw = {"batch_size": 5, "augment": "train", "image_size": 16, "shuffle": True, "seed": 3,
          "device": "cpu", "num_threads": 0 if backend == "torch" else 1, **kw}
    return fastload.Loader(store, backend=backend, **kw)


def _epoch(loader):
    images, labels = zip(*loader)
    return list(images), list(labels)


MIXES = [Mixup(alpha=0.4), CutMix(alpha=1.0, p=0.7), RandomErasing(p=0.5)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_loader_mixes_each_batch_as_the_transforms_do_by_seed_epoch_and_batch(small_lmdb, backend):
    plain = _loader(small_lmdb, backend)
    mixed = _loader(small_lmdb, backend, batch_transforms=MIXES)
    for epoch in range(2):
        (xs, ys), (mx, my) = _epoch(plain), _epoch(mixed)
        assert len(mx) == 5  # 24 records: the last batch has 4
        for b, (x, y) in enumerate(zip(xs, ys)):
            for salt, t in enumerate(MIXES):  # what the stage must have done, by hand
                bound = t if isinstance(t, RandomErasing) else type(t)(**{**t.__dict__, "num_classes": 3})
                x, y = bound(x, y, batch_generator(3, epoch, b, salt, torch.device("cpu")))
            assert torch.equal(mx[b], x) and torch.equal(my[b], y)
            assert my[b].shape == (len(x), 3) and torch.allclose(my[b].sum(1), torch.ones(len(x)))
    # every batch and every epoch draws anew
    first = [y for y in _epoch(_loader(small_lmdb, backend, batch_transforms=MIXES))[1]]
    assert len({round(y.max().item(), 6) for y in first}) > 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_run_replays_and_resumes_mid_epoch(small_lmdb, backend):
    def loader():
        return _loader(small_lmdb, backend, batch_transforms=MIXES)

    full = loader()
    epoch0 = _epoch(full)
    epoch1 = _epoch(full)
    assert not torch.equal(torch.cat(epoch0[1]), torch.cat(epoch1[1]))
    first = loader()
    again = _epoch(first)  # epoch 0 done, and the same as the first loader's
    assert all(torch.equal(a, b) for a, b in zip(again[0] + again[1], epoch0[0] + epoch0[1]))
    head = []
    for k, batch in enumerate(first):  # epoch 1, broken off after two batches
        head.append(batch)
        if k == 1:
            break
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed)
    assert len(head) + len(rest) == len(epoch1[0])
    for (x, y), ex, ey in zip(head + rest, *epoch1):
        assert torch.equal(x, ex) and torch.equal(y, ey)


# --- the DALI backend's tail: custom ops at the end run in the batch stage --------------------------------
@pytest.fixture(scope="module")
def png_store(tmp_path_factory) -> str:
    """Lossless noise images (both backends decode them to the same pixels), 3 classes."""
    root = tmp_path_factory.mktemp("png") / "data"
    rng = np.random.default_rng(0)
    for i in range(12):
        folder = root / f"class_{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:02d}.png"), rng.integers(0, 256, (20 + i % 5, 24, 3), dtype=np.uint8))
    out = str(root) + ".lmdb"
    fastload.pack(root, out, options=fastload.PackOptions(workers=1, progress=False))
    return out


def _both(store, augment, device="cpu", **kw):
    kw = {"batch_size": 5, "shuffle": True, "seed": 2, **kw}
    ref = fastload.Loader(store, augment=augment, backend="torch", device=device, num_threads=0, **kw)
    out = fastload.Loader(store, augment=augment, backend="dali", device=device, num_threads=1, **kw)
    (a, la), (b, lb) = map(_epoch, (ref, out))
    assert all(torch.equal(x, y) for x, y in zip(la, lb))
    return torch.cat(a).cpu(), torch.cat(b).cpu(), out


# name: (augment, where the tail starts)
TAILS = {
    "per-sample op, then Normalize": ([ops.CenterCrop(16), jitter.with_args(amount=30), ops.Normalize()], 1),
    "Normalize, then the README's add_noise": ([ops.CenterCrop(16), ops.Normalize(), add_noise.with_args(sigma=0.1)], 2),
    "a batch op, then a per-sample op": ([ops.CenterCrop(16), ops.Normalize(), centre_batch, add_noise], 2),
}


@needs_dali
@pytest.mark.parametrize("name", list(TAILS))
def test_tail_ops_on_dali_give_the_torch_backends_output(png_store, name):
    augment, start = TAILS[name]
    ref, out, loader = _both(png_store, augment)
    backend = loader._get_backend()  # the stage runs the tail, then the output (the list's trailing Normalize)
    # on the CPU per-sample ops run in the host stage; a batch op and what follows it in the tail stage
    batch_op = any(isinstance(op, fastload.ops.BatchOp) for op in augment)
    assert bool(backend.tail) == batch_op and backend.lowered.host
    normalize = (backend.output.normalize,) if backend.output.normalize else ()
    assert backend.lowered.head + backend.tail + normalize == tuple(augment)
    if batch_op:
        assert backend.tail + normalize == tuple(augment[start:])
    assert out.dtype == ref.dtype == torch.float32 and out.shape == ref.shape == (12, 3, 16, 16)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)  # DALI's normalize rounds its own way


@needs_dali
@pytest.mark.parametrize("dtype,layout", [("float16", "NHWC"), ("uint8", "NCHW")])
def test_tail_output_dtype_and_layout(png_store, dtype, layout):
    ref, out, _ = _both(png_store, TAILS["per-sample op, then Normalize"][0], output_dtype=dtype, layout=layout)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert torch.equal(out, ref)


@needs_dali
def test_the_stage_pool_gives_the_one_thread_output_and_ends_with_the_loader(png_store):
    import threading

    def stage_threads():
        return [t for t in threading.enumerate() if t.name.startswith("fastload-stage")]

    augment = [ops.RandomResizedCrop(16), centre_batch, ops.Normalize()]  # a batch op: the tail stage
    before = set(stage_threads())  # other tests' loaders may still hold theirs
    one, pool = (_loader(png_store, "dali", augment=augment, num_threads=n) for n in (1, 3))
    assert all(torch.equal(a, b) for a, b in zip(_epoch(one)[0], _epoch(pool)[0]))
    mine = set(stage_threads()) - before
    assert mine  # the 3-thread loader ran its stage on a pool
    pool.close()
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in mine) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.is_alive() for t in mine)


@needs_dali
def test_vectorized_op_on_the_cpu_gives_the_torch_backends_output(png_store):
    """On the CPU the host stage calls a vectorized op per sample (faster there than one call on
    the whole batch), so its draws are the torch backend's; the GPU calls it once per batch."""
    augment = [ops.CenterCrop(16), ops.Normalize(), add_noise_batched.with_args(sigma=0.5)]
    plain, _, _ = _both(png_store, augment[:2])
    ref, out, loader = _both(png_store, augment)
    assert loader._get_backend().lowered.head == tuple(augment)
    assert out.dtype == ref.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    noise = out - plain  # N(0, 0.5) noise on the same images
    assert abs(noise.std().item() - 0.5) < 0.02 and abs(noise.mean().item()) < 0.02


@needs_dali
def test_mid_list_custom_op_stays_in_dali_and_gives_the_torch_backends_output(png_store):
    augment = [ops.CenterCrop(16), jitter, ops.Flip(horizontal=True), ops.Normalize()]
    ref, out, loader = _both(png_store, augment)
    assert loader._get_backend().tail == ()  # a built-in follows it: fn.python_function
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)


@needs_dali
@pytest.mark.parametrize("op,match", [
    (broken, r"custom op 'broken' failed on record \d+ \(epoch 0, seed 2\): ValueError: no good"),
    (broken_batched, r"'broken_batched' failed on record \d+ \(epoch 0, seed 2\)"),  # per sample on the CPU
    (broken_batch, r"'broken_batch' failed on the batch of records \[\d+, \d+, \d+, \d+, \d+\]"),
])
def test_tail_errors_name_the_op_and_the_record(png_store, op, match):
    loader = fastload.Loader(png_store, augment=[ops.CenterCrop(16), op, ops.Normalize()], batch_size=5,
                             backend="dali", device="cpu", num_threads=1, seed=2)
    with pytest.raises(CustomOpError, match=match):
        next(iter(loader))


@needs_dali
def test_custom_ops_benchmark_measures_each_kind(small_lmdb):
    """benchmarks/custom_ops.py at toy size: every row measured, the op timed alone."""
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.custom_ops import measure

    names = ["train", "+ add_noise @op", "+ 255 - x @batch_op"]
    results = measure(small_lmdb, names=names, size=32, batch_size=8, threads=1, device="cpu", rounds=1,
                      batches=1, flush=0)
    assert list(results) == names
    assert all(r["images_per_s"] > 0 and r["cpu_ms_per_image"] >= 0 for r in results.values())  # 10 ms ticks
    assert results["+ add_noise @op"]["op_alone_ms_per_image"] > 0 == results["train"]["op_alone_ms_per_image"]


# --- every preset x output dtype x layout, both backends ------------------------------------------
DTYPES = {"float32": torch.float32, "float16": torch.float16, "uint8": torch.uint8}
CASES = [(d, layout) for d in DTYPES for layout in ("NCHW", "NHWC")]


@functools.cache
def _matrix(store: str, backend: str, device: str, preset: str, dtype: str, layout: str):
    loader = fastload.Loader(store, batch_size=8, augment=preset, image_size=32, shuffle=True, seed=5,
                             backend=backend, device=device, output_dtype=dtype, layout=layout,
                             num_threads=0 if backend == "torch" else 1)
    images, labels = _epoch(loader)
    loader.close()
    assert all(x.device.type == ("cuda" if device == "cuda" else "cpu") for x in images)
    return torch.cat(images).cpu(), torch.cat(labels).cpu()


def _grey(images: torch.Tensor, dtype: str, layout: str) -> torch.Tensor:
    """NHWC float 0..255 pixels back from any output (normalized ones denormalized)."""
    x = images.float().permute(0, 2, 3, 1) if layout == "NCHW" else images.float()
    if dtype != "uint8":
        x = (x * torch.tensor(IMAGENET_STD) + torch.tensor(IMAGENET_MEAN)) * 255
    return x


def _check_matrix(store, device, preset, dtype, layout):
    shape = (24, 3, 32, 32) if layout == "NCHW" else (24, 32, 32, 3)
    grey = {}
    for backend in BACKENDS:
        images, labels = _matrix(store, backend, device, preset, dtype, layout)
        assert tuple(images.shape) == shape and images.dtype == DTYPES[dtype]
        assert labels.dtype == torch.int64 and labels.shape == (24,)
        grey[backend] = g = _grey(images, dtype, layout)
        assert g.min() >= -0.5 and g.max() <= 255.5 and g.std() > 20  # pixels, not noise or a constant
        # every dtype and layout is the float32 NCHW output, cast (uint8: not normalized, rounded)
        base = _grey(*_matrix(store, backend, device, preset, "float32", "NCHW")[:1], "float32", "NCHW")
        tolerance = {"float32": 1e-3, "float16": 0.6, "uint8": 0.501}[dtype]
        assert (g - base).abs().max() <= tolerance
    if len(grey) == 2:
        # Same drawn crops and flips; the resamplers differ (OpenCV vs DALI's antialiased linear).
        # Measured on the CPU on this store: mean 0.8 (train) / 1.2 (eval) grey levels, 99th
        # percentile 4 / 5, max 15 / 20. On the GPU nvJPEG's IDCT and chroma upsampling add a few
        # levels (not measured: no GPU at hand; test_gpu_eval_matches_cpu allows 5.8 on average).
        mean, q99, top = (2.5, 10, 48) if device == "cpu" else (6, 24, 96)
        diff = (grey["torch"] - grey["dali"]).abs()
        assert diff.mean() < mean and diff.flatten().quantile(0.99) < q99 and diff.max() < top, (
            diff.mean(), diff.flatten().quantile(0.99), diff.max())


@pytest.mark.parametrize("preset", ["train", "eval"])
@pytest.mark.parametrize("dtype,layout", CASES)
def test_presets_dtypes_and_layouts_agree_across_backends(small_lmdb, preset, dtype, layout):
    _check_matrix(small_lmdb, "cpu", preset, dtype, layout)


# --- GPU twins (python -m pytest -m gpu) ----------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["train", "eval"])
@pytest.mark.parametrize("dtype,layout", CASES)
def test_gpu_presets_dtypes_and_layouts_agree_across_backends(small_lmdb, preset, dtype, layout):
    _check_matrix(small_lmdb, "cuda", preset, dtype, layout)
    if dali_available():  # nvJPEG against libjpeg-turbo: a few grey levels
        gpu = _grey(_matrix(small_lmdb, "dali", "cuda", preset, dtype, layout)[0], dtype, layout)
        cpu = _grey(_matrix(small_lmdb, "dali", "cpu", preset, dtype, layout)[0], dtype, layout)
        assert (gpu - cpu).abs().mean() < 6


@pytest.mark.gpu
@needs_dali
@pytest.mark.parametrize("name", list(TAILS))
def test_gpu_tail_ops_run_as_cupy_and_match_the_cpu(png_store, name):
    pytest.importorskip("cupy")
    _, cpu, _ = _both(png_store, TAILS[name][0])
    ref, gpu, _ = _both(png_store, TAILS[name][0], device="cuda")
    # 16x16x3 noise fields are under DeviceGenerator's 1024 values: NumPy draws them, as on the CPU
    torch.testing.assert_close(gpu, cpu, atol=2e-5, rtol=0)
    torch.testing.assert_close(ref, cpu, atol=2e-5, rtol=0)


@pytest.mark.gpu
@needs_dali
def test_gpu_vectorized_op_errors_name_the_batch(png_store):
    loader = fastload.Loader(png_store, augment=[ops.CenterCrop(16), broken_batched], batch_size=5,
                             backend="dali", device="cuda", num_threads=1, seed=2)
    with pytest.raises(CustomOpError, match=r"'broken_batched' failed on the batch of records \[\d+, \d+"):
        next(iter(loader))


@pytest.mark.gpu
@needs_dali
def test_gpu_vectorized_op_draws_on_the_device(png_store):
    pytest.importorskip("cupy")
    augment = [ops.CenterCrop(16), ops.Normalize(), add_noise_batched.with_args(sigma=0.5)]
    plain, _, _ = _both(png_store, augment[:2], device="cuda")
    _, out, _ = _both(png_store, augment, device="cuda")
    noise = out - plain
    assert abs(noise.std().item() - 0.5) < 0.02 and abs(noise.mean().item()) < 0.02


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_gpu_batch_transforms_replay_on_the_device(small_lmdb, backend):
    def run():
        loader = _loader(small_lmdb, backend, device="cuda", batch_transforms=MIXES)
        return _epoch(loader)

    (xs, ys), (xs2, ys2) = run(), run()
    assert all(x.is_cuda and y.is_cuda for x, y in zip(xs, ys))
    assert all(torch.equal(a, b) for a, b in zip(xs + ys, xs2 + ys2))
    assert all(torch.allclose(y.sum(1), torch.ones(len(y), device=y.device)) for y in ys)


# --- the stage by itself ---------------------------------------------------------------------------
@fastload.op
def crop_to_8(x):
    return x[:8, :8]


def test_stage_threads_do_not_change_a_tail_with_a_normalize_between_ops():
    from fastload.backends.dali.tail import TailStage

    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (6, 12, 10, 3), generator=g, dtype=torch.uint8)
    outs = [TailStage(tail=[jitter, ops.Normalize(), crop_to_8], seed=3, output=OutputSpec(layout="NCHW", dtype="float32"),
                      threads=threads)(images, 1, np.arange(10, 16))
            for threads in (1, 3)]
    assert outs[0].shape == (6, 3, 8, 8) and torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("threads", [1, 4])
def test_stage_takes_images_of_different_sizes_when_the_tail_makes_them_one_size(threads):
    """What the DALI engine can hand over when the head leaves sizes apart (LEAD: engine.next).
    The same results and errors whether the CPU's per-sample work runs on one thread or several."""
    from fastload.backends.dali.tail import TailStage

    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (10 + i, 12, 3), generator=g, dtype=torch.uint8) for i in range(3)]
    # the list's trailing Normalize is the output's (fastload.output.split_normalize)
    stage = TailStage(tail=[jitter, crop_to_8, centre_batch], seed=1,
                      output=OutputSpec(layout="NCHW", dtype="float32", normalize=ops.Normalize()), threads=threads)
    out = stage(images, 0, np.arange(3))
    assert out.shape == (3, 3, 8, 8) and out.dtype == torch.float32
    # the same as the torch backend's order of work, by hand
    ref = ops.custom.run_numpy([jitter, crop_to_8, centre_batch],
                               [x.numpy() for x in images], [ops.base.sample_rng(1, 0, i) for i in range(3)])
    mean, std = np.float32(IMAGENET_MEAN) * 255, np.float32(IMAGENET_STD) * 255
    expected = np.stack([normalized(x, mean, std) for x in ref]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(out.numpy(), expected)
    bad = TailStage(tail=[jitter], seed=1, output=OutputSpec(layout="NHWC", dtype="uint8"), threads=threads)
    with pytest.raises(CustomOpError, match="'jitter' failed on record 1 .*one size"):
        bad(images, 0, np.arange(3))


@pytest.mark.parametrize("transform", [transforms.Mixup(alpha=0.2, p=0.0, num_classes=3),
                                       transforms.CutMix(alpha=1.0, p=0.0, num_classes=3)])
def test_a_cpu_batch_not_drawn_for_mixing_is_returned_as_it_is_after_the_same_draws(transform):
    images = torch.rand(4, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 1])
    rng = torch.Generator().manual_seed(5)
    out, soft = transform(images, labels, rng)
    assert out is images  # no arithmetic on a batch that is not mixed
    assert torch.equal(soft, torch.nn.functional.one_hot(labels, 3).float())
    # the generator moved on exactly as when the batch is mixed: p, then two Gamma draws
    # (and CutMix's box centre), so the transforms after it draw the same numbers
    again = torch.Generator().manual_seed(5)
    torch.rand((), generator=again)
    torch._standard_gamma(torch.full((2,), transform.alpha), generator=again)
    if isinstance(transform, transforms.CutMix):
        torch.rand(2, generator=again)
    assert torch.equal(torch.rand(3, generator=rng), torch.rand(3, generator=again))


def test_mixup_of_a_float_batch_is_the_plain_formula_bit_for_bit():
    images, labels = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    out, _ = transforms.Mixup(alpha=0.4, p=1.0, num_classes=3)(images, labels, torch.Generator().manual_seed(3))
    again = torch.Generator().manual_seed(3)  # the same draws: p, then Beta from two Gammas
    applied = (torch.rand((), generator=again) < 1.0).float()
    g = torch._standard_gamma(torch.full((2,), 0.4), generator=again)
    lam = applied * (g[0] / (g[0] + g[1])) + (1.0 - applied)
    assert torch.equal(out, images.float() * lam + images.flip(0).float() * (1.0 - lam))


@pytest.mark.parametrize("layout,shape", [("NCHW", (6, 3, 16, 20)), ("NHWC", (6, 16, 20, 3))])
def test_cutmix_on_the_cpu_pastes_exactly_the_masked_box(layout, shape):
    """The CPU copies each partner's box; the result is the masked torch.where of the GPU path."""
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for seed in range(10):
        images = torch.randn(*shape)
        out, soft = transforms.CutMix(alpha=1.0, p=1.0, num_classes=3, layout=layout)(
            images, labels, torch.Generator().manual_seed(seed))
        again = torch.Generator().manual_seed(seed)  # the same draws: p, Beta, the box centre
        applied = (torch.rand((), generator=again) < 1.0).float()
        g = torch._standard_gamma(torch.full((2,), 1.0), generator=again)
        cut = torch.sqrt(1.0 - (applied * (g[0] / (g[0] + g[1])) + (1.0 - applied)))
        centre = torch.rand(2, generator=again)
        y_axis, x_axis = (2, 3) if layout == "NCHW" else (1, 2)
        h, w = shape[y_axis], shape[x_axis]
        (top, bottom), (left, right) = [((centre[k] * n - cut * n / 2).floor().clamp(min=0),
                                         (centre[k] * n + cut * n / 2).floor().clamp(max=n)) for k, n in enumerate((h, w))]
        inside = ((torch.arange(h) >= top) & (torch.arange(h) < bottom))[:, None] & \
                 ((torch.arange(w) >= left) & (torch.arange(w) < right))[None, :]
        view = [1] * 4
        view[y_axis], view[x_axis] = h, w
        assert torch.equal(out, torch.where(inside.view(view), images.flip(0), images))
        kept = 1.0 - (bottom - top).clamp(min=0) * (right - left).clamp(min=0) / float(h * w)
        one_hot = torch.nn.functional.one_hot(labels, 3).float()
        assert torch.equal(soft, one_hot * kept + one_hot.flip(0) * (1.0 - kept))
