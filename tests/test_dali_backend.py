"""The DALI backend through the Loader: CPU mode always (DALI runs without a GPU); GPU twins
run where CUDA is present. Coverage, order and resume are in test_loader.py for both backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from imagefiles import npy, pixels, write
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


def _host_matches_torch_backend(store, reference=None, exact=False, **kw):
    """The DALI backend on the CPU runs ``kw``'s ops in the host stage and gives the torch
    backend's batches (on ``reference``, default the same store); returns its lowered ops. Both
    apply the same draws (``Op.as_fed``) with the same code: ``exact`` where no decoder is
    involved (arrays); encoded images go through DALI's libjpeg-turbo and OpenCV's, equal here,
    but another build may move a grey level here and there."""
    ref, ref_labels = _batches(reference or store, "torch", **kw)
    loader = fastload.Loader(store, backend="dali", device="cpu", num_threads=2, batch_size=8, **kw)
    out, labels = map(torch.cat, zip(*loader))
    lowered = loader._get_backend().lowered
    assert lowered.host
    assert torch.equal(labels, ref_labels) and out.dtype == ref.dtype and out.shape == ref.shape
    if exact:
        assert torch.equal(out, ref), (out.float() - ref.float()).abs().max()
    assert (out.float() - ref.float()).abs().mean().item() < 0.01
    return lowered


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
    # arrays for the CPU host stage: no decode, no op for DALI, so no pipeline (it would only copy them)
    loader = fastload.Loader(str(raw), backend="dali", device="cpu", num_threads=1, batch_size=8, image_size=32)
    next(iter(loader))
    engines = loader._get_backend()._engines
    assert engines and all(e.pipe is None for e in engines)
    loader.close()


def test_custom_ops_match_torch_backend(small_lmdb):
    augment = [ops.CenterCrop(24), GaussianNoise(sigma=10.0), HistogramEqualization(), ops.Normalize()]
    ref, _ = _batches(small_lmdb, "torch", augment=augment)
    out, _ = _batches(small_lmdb, "dali", augment=augment)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-4)


@pytest.mark.parametrize("payload", ["encoded", "raw"])  # raw: the host stage reads the feed's slots, no pipeline
@pytest.mark.parametrize("augment", ["eval", "train"])  # train: the feed lays out a raw record's crop window alone
def test_corrupt_record_named_not_wrapped(small_folder, tmp_path, payload, augment):
    out = str(tmp_path / "bad.lmdb")
    fastload.pack(small_folder, out, options=fastload.PackOptions(workers=1, progress=False, payload=payload))
    flip_byte_in_record(out, 4)
    loader = fastload.Loader(out, batch_size=4, augment=augment, image_size=16, backend="dali", device="cpu",
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


def test_train_preset_draws_the_torch_backends_crops(small_lmdb):
    """Both backends draw each sample's crop and flip from [seed, epoch, record]."""
    kw = dict(augment="train", image_size=32, shuffle=True, seed=9)
    ref, ref_labels = _batches(small_lmdb, "torch", **kw)
    out, labels = _batches(small_lmdb, "dali", **kw)
    assert torch.equal(labels, ref_labels)
    assert (out - ref).abs().mean().item() < 0.1  # same windows; only the resamplers differ


def test_augmentations_change_every_epoch_and_replay_on_resume(small_lmdb):
    def loader():
        return fastload.Loader(small_lmdb, batch_size=6, augment="train", image_size=32, shuffle=False,
                               seed=1, backend="dali", device="cpu", num_threads=1)

    runs = loader()
    epoch0 = torch.cat([x for x, _ in runs])
    epoch1 = torch.cat([x for x, _ in runs])  # same order (shuffle=False), new draws
    assert not torch.equal(epoch0, epoch1)
    first = loader()
    first.set_epoch(1)
    head = []
    for k, (x, _) in enumerate(first):
        head.append(x)
        if k == 1:
            break
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(torch.cat(head + [x for x, _ in resumed]), epoch1)


def test_broken_off_pass_reuses_the_pipeline(small_lmdb):
    loader = fastload.Loader(small_lmdb, batch_size=4, augment="eval", image_size=16, shuffle=True,
                             backend="dali", device="cpu", num_threads=1, prefetch=2)
    for k, _ in enumerate(loader):
        if k == 1:
            break
    labels = torch.cat([y for _, y in loader])
    store = fastload.open_store(small_lmdb)
    assert sorted(labels.tolist()) == sorted(store.labels.tolist())
    assert len(loader._get_backend()._engines) == 1  # drained and reset, not rebuilt


def test_two_live_iterators_are_independent(small_lmdb):
    loader = fastload.Loader(small_lmdb, batch_size=8, augment="eval", image_size=16, backend="dali",
                             device="cpu", num_threads=1)
    pairs = list(zip(loader, loader))
    assert len(pairs) == len(loader)
    for (a, ya), (b, yb) in pairs:
        assert torch.equal(ya, yb) and torch.equal(a, b)  # unshuffled: the same batches


@pytest.mark.parametrize("payload", ["encoded", "raw"])
def test_killed_feed_worker_is_named(small_folder, small_lmdb, tmp_path, payload):
    import os
    import signal

    store = small_lmdb
    if payload == "raw":  # the host stage reads the feed's slots, no pipeline
        store = str(tmp_path / "raw.lmdb")
        fastload.pack(small_folder, store, options=fastload.PackOptions(workers=1, progress=False, payload="raw"))
    loader = fastload.Loader(store, batch_size=1, augment="eval", image_size=16, backend="dali",
                             device="cpu", num_threads=1, prefetch=1)
    it = iter(loader)
    next(it)
    pid = loader._get_backend()._engines[0].pool.pids[0]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(fastload.WorkerDiedError, match=rf"feed worker 0 \(pid {pid}\).*SIGKILL"):
        for _ in it:
            pass
    assert len(list(loader)) == len(loader)  # the next pass starts a new feed


_KILLED_MID_EPOCH = """
import os, signal, sys
import fastload
loader = fastload.Loader(sys.argv[1], batch_size=2, augment="eval", image_size=16, backend=sys.argv[2],
                         device="cpu", num_threads=2)
it = iter(loader)
next(it)
backend = loader._get_backend()
pids = backend._engines[0].pool.pids if sys.argv[2] == "dali" else [w.pid for w in backend._all[0]._iterator._workers]
print(" ".join(map(str, pids)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("backend", ["dali", "torch"])
def test_killed_training_leaves_no_workers_or_shared_memory(small_lmdb, backend):
    import os
    import subprocess
    import sys
    import time

    before = set(os.listdir("/dev/shm"))
    done = subprocess.run([sys.executable, "-c", _KILLED_MID_EPOCH, small_lmdb, backend],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    pids = [int(p) for p in done.stdout.split()]
    assert pids
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")], "workers outlived the training"
    # Files that other tests running beside this one (xdist) made meanwhile are theirs: a torch
    # segment names its creator (torch_PID_...), so only those of dead processes count.
    new = set(os.listdir("/dev/shm")) - before
    assert {f for f in new if not _creator_alive(f)} == set()


def _creator_alive(name):
    import os
    import re

    found = re.match(r"torch_(\d+)_", name)
    return found is not None and os.path.exists(f"/proc/{found.group(1)}")


def test_forked_child_never_shuts_down_the_parents_pipelines(small_lmdb):
    """A DataLoader worker forked while a DALI loader awaits garbage collection must not call the
    pipeline's Shutdown() (its threads are not in the child): it would wait forever."""
    import gc
    import os

    loader = fastload.Loader(small_lmdb, batch_size=4, augment="eval", image_size=16, backend="dali",
                             device="cpu", num_threads=1)
    next(iter(loader))
    cycle = [loader]
    cycle.append(cycle)  # only the cyclic garbage collector can free it now
    gc.disable()
    try:
        del loader, cycle
        pid = os.fork()
        if pid == 0:  # the child collects the parent's pipeline
            gc.collect()
            os._exit(0)
        for _ in range(200):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            __import__("time").sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung shutting down the parent's DALI pipeline")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        gc.enable()
        gc.collect()


@fastload.op
def center16(x):
    """A custom crop to 16 x 16 (module level: worker processes import it)."""
    h, w = x.shape[:2]
    return x[(h - 16) // 2 : (h - 16) // 2 + 16, (w - 16) // 2 : (w - 16) // 2 + 16]


def test_images_of_different_sizes_reach_a_tail_that_evens_them(small_lmdb):
    augment = [ops.Resize(shorter=20), center16, ops.Normalize()]
    out, _ = _batches(small_lmdb, "dali", augment=augment)
    ref, _ = _batches(small_lmdb, "torch", augment=augment)
    assert out.shape == ref.shape == (24, 3, 16, 16)
    assert (out - ref).abs().mean().item() < 0.05


def test_images_of_different_sizes_without_a_tail_are_named(small_lmdb):
    loader = fastload.Loader(small_lmdb, batch_size=4, augment=[ops.Resize(shorter=20)], backend="dali",
                             device="cpu", num_threads=1)
    with pytest.raises(fastload.FastloadError, match=r"records \[\d+, \d+, \d+, \d+\] differ in size"):
        next(iter(loader))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_random_crops_of_exif_rotated_photos_match_the_torch_backend(tmp_path, orientation):
    """Phone photos carry an EXIF orientation. The crop window is drawn on the upright image
    (the record's shape); DALI's decoder cuts it after applying the orientation, as the torch
    backend does, so both backends crop the same part of the picture."""
    from imagefiles import with_exif_orientation, write

    y, x = np.mgrid[0:120, 0:200]
    image = np.stack([x * 255 // 200, y * 255 // 120, (x // 20 % 2) * 255], -1).astype(np.uint8)
    for i in range(4):  # an asymmetric picture: a crop from the wrong corner shows
        write(str(tmp_path / "data" / "x" / f"{i}.jpg"), with_exif_orientation(image, orientation, "JPEG"))
    out = str(tmp_path / "s.lmdb")
    fastload.pack(str(tmp_path / "data"), out, options=fastload.PackOptions(workers=1, progress=False))
    augment = [ops.RandomResizedCrop(48, scale=(0.2, 0.4)), ops.Normalize()]
    batches = [next(iter(fastload.Loader(out, batch_size=4, augment=augment, backend=b, device="cpu", seed=1)))[0]
               for b in ("torch", "dali")]
    assert (batches[0] - batches[1]).abs().mean().item() < 0.05  # resamplers differ, the crops do not


def test_a_pipeline_that_became_garbage_is_freed_before_a_fork(small_lmdb):
    """A torch DataLoader worker forked while a DALI pipeline sits in uncollected garbage hung:
    the child's first garbage collection (during Python's own after-fork work, before fastload's
    handler disowns inherited pipelines) shut the pipeline down, waiting for threads the child
    does not have. fastload collects such garbage in the parent before every fork."""
    import gc
    import os
    import weakref

    enabled = gc.isenabled()
    gc.disable()  # keep the garbage until the fork, as a busy process would by chance
    try:
        loader = fastload.Loader(small_lmdb, batch_size=4, augment="eval", image_size=16, backend="dali",
                                 device="cpu", num_threads=1)
        next(iter(loader))
        pipe = weakref.ref(loader._backend._engines[0].pipe)
        cycle: list = [loader]
        cycle.append(cycle)  # reachable only through a cycle: only the collector can free it
        del loader, cycle
        assert pipe() is not None
        child = os.fork()
        if child == 0:  # the forked child: report whether the pipeline came along as garbage
            os._exit(0 if pipe() is None else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert pipe() is None
    finally:
        if enabled:
            gc.enable()


@pytest.mark.parametrize("payload", ["encoded", "raw"])
@pytest.mark.parametrize("augment,output_dtype,layout", [
    ("train", "float32", "NCHW"), ("train", "uint8", "NHWC"), ("train", "float16", "NCHW"), ("eval", "float32", "NCHW"),
    ([ops.Resize(size=(30, 40)), ops.Flip(), ops.Normalize()], "float32", "NHWC"),
])
def test_cpu_presets_finish_on_the_host_with_the_torch_backends_pixels(small_folder, small_lmdb, tmp_path, payload,
                                                                      augment, output_dtype, layout):
    """On the CPU, DALI decodes (only the crop windows of a random-resized crop) and the host
    finish resizes, crops, mirrors and normalizes with the torch backend's own code: same
    windows, same pixels."""
    store = small_lmdb
    if payload == "raw":
        store = str(tmp_path / "raw.lmdb")
        fastload.pack(small_folder, store, options=fastload.PackOptions(payload="raw", workers=1, progress=False))
    _host_matches_torch_backend(store, small_lmdb, augment=augment, image_size=32, shuffle=True, seed=9,
                                output_dtype=output_dtype, layout=layout)


@fastload.op
def _inverted(x):
    return 255 - x


@fastload.op
def _scaled(x):
    return x * 0.9


@fastload.op
def _centre(x):  # a custom op that decides the output size
    return x[2:-2, 3:-3]


@fastload.batch_op
def _inverted_batch(images):
    return [255 - x for x in images]


@pytest.mark.parametrize("augment,tail", [
    ([ops.RandomResizedCrop(32), ops.Flip(), ops.Normalize(), GaussianNoise(sigma=0.1)], False),  # after Normalize
    ([ops.RandomResizedCrop(32), ops.Flip(), ops.Normalize(), _scaled], False),
    ([ops.RandomResizedCrop(32), ops.Flip(), _inverted, ops.Normalize()], False),  # before the Normalize
    ([ops.RandomResizedCrop(32), _inverted, ops.Flip(vertical=True), ops.Rotate(10), ops.Normalize()], False),
    ([ops.RandomResizedCrop(32), ops.Flip(), _centre, ops.Normalize()], False),  # the op decides the size
    ([ops.RandomResizedCrop(32), ops.Flip(), _inverted_batch, ops.Normalize()], True),  # a batch op: the tail
], ids=["noise-after-normalize", "scale-after-normalize", "invert-then-normalize", "invert-mid-list", "centre-crop",
        "batch-op-tail"])
def test_custom_ops_run_on_the_host_with_the_torch_backends_pixels(small_lmdb, augment, tail):
    """On the CPU, per-sample custom ops run in the host stage's per-sample loop, anywhere in the
    list (no extra pass over the batch, no DALI CPU operator); a batch op at the end runs in the
    tail stage on the host stage's batch. Same pixels as the torch backend either way."""
    lowered = _host_matches_torch_backend(small_lmdb, augment=augment, image_size=32, shuffle=True, seed=3)
    assert bool(lowered.tail) == tail
    assert not lowered.needs_ids  # nothing runs through fn.python_function


@pytest.mark.parametrize("crop", [ops.RandomCrop(40, padding=6, fill=128),
                                  ops.RandomCrop(40, padding=6, padding_mode="reflect"),
                                  ops.RandomCrop(40, padding=6, padding_mode="edge")], ids=["fill", "reflect", "edge"])
def test_random_crop_in_dalis_own_operators_gives_the_torch_backends_pixels(small_lmdb, crop):
    """Where DALI's operators run the list (a batch op mid-list; every list on the GPU), a leading
    RandomCrop's window is decoded and padded in DALI (``after_roi``: ``fn.slice`` with its fill;
    mirrored sides sliced, flipped and joined; edges by a clamped warp)."""
    augment = [crop, _inverted_batch, ops.Flip(vertical=True), ops.Normalize()]
    ref, ref_labels = _batches(small_lmdb, "torch", augment=augment, shuffle=True, seed=8)
    loader = fastload.Loader(small_lmdb, backend="dali", device="cpu", num_threads=2, batch_size=8, augment=augment,
                             shuffle=True, seed=8)
    out, labels = map(torch.cat, zip(*loader))
    lowered = loader._get_backend().lowered
    assert not lowered.host and lowered.fuse_decoder
    assert torch.equal(labels, ref_labels) and out.shape == ref.shape == (24, 3, 40, 40)
    assert (out - ref).abs().mean().item() < 0.01


@pytest.mark.parametrize("augment", [
    [_inverted, ops.RandomResizedCrop(24), ops.Flip(), ops.Normalize()],
    [_centre, ops.RandomResizedCrop(24), ops.Flip(vertical=True), ops.Rotate(10)],  # it changes the size
    [ops.RandomResizedCrop(40), _centre, ops.RandomCrop(24, padding=4), ops.Normalize()],
], ids=["invert-then-crop", "centre-then-crop", "crop-centre-crop"])
def test_a_crop_after_a_custom_op_is_drawn_in_the_host_stage(small_lmdb, augment):
    """A crop draws from the image size; after a custom op that size is only known once the op
    ran, so the feed cannot draw it: on the CPU the host stage draws every op as the torch
    backend does, from whole images, and gives its pixels. On the GPU the feed must draw ahead."""
    from fastload.backends.dali.lowering import lower_ops
    from fastload.output import OutputSpec

    lowered = _host_matches_torch_backend(small_lmdb, augment=augment, image_size=24, shuffle=True, seed=3)
    assert lowered.host_draws and lowered.params.size == 0 and not lowered.fuse_decoder
    with pytest.raises(ValueError, match="RandomResizedCrop draws from the image size|RandomCrop draws from"):
        lower_ops(augment, encoded=True, output=OutputSpec(), device="gpu")


def test_a_custom_op_that_breaks_on_the_host_names_itself_and_the_record(small_lmdb):
    loader = fastload.Loader(small_lmdb, batch_size=4, augment=[ops.RandomResizedCrop(24), _failing],
                             backend="dali", device="cpu", num_threads=2, seed=5)
    with pytest.raises(fastload.ops.CustomOpError, match=r"'_failing' failed on record \d+ \(epoch 0, seed 5\)"):
        next(iter(loader))


@fastload.op
def _failing(x):
    raise ValueError("no good")


def test_host_finish_never_overwrites_a_batch_still_held(small_lmdb):
    """The host finish reuses an output batch only once no tensor or view of it is alive."""
    loader = fastload.Loader(small_lmdb, batch_size=4, augment="train", image_size=24, backend="dali",
                             device="cpu", num_threads=2, seed=3)
    held, views, copies = [], [], []
    for _ in range(2):  # two passes: far more batches than the buffers kept
        for k, (images, _) in enumerate(loader):
            copies.append(images.clone())
            held.append(images if k % 2 else None)
            views.append(images[1:3].permute(0, 2, 3, 1) if k % 3 == 0 else None)
    for batch, view, copy in zip(held, views, copies):
        if batch is not None:
            assert torch.equal(batch, copy)
        if view is not None:
            assert torch.equal(view, copy[1:3].permute(0, 2, 3, 1))


@pytest.mark.parametrize("augment", [
    [ops.RandomResizedCrop(24), ops.Flip(vertical=True), ops.Normalize()],
    [ops.RandomResizedCrop(24), ops.Flip(), ops.ColorJitter(0.4, 0.4, 0.4, 0.1), ops.Normalize()],
    [ops.RandomResizedCrop(24), ops.Flip(horizontal=True, vertical=True), ops.Rotate(max_degrees=15),
     ops.Normalize()],  # the radiology list
    [ops.RandomResizedCrop(24), ops.Flip(), ops.GaussianBlur(sigma=(0.1, 2.0), p=0.5), ops.Normalize()],
    [ops.Rotate(max_degrees=30), ops.CenterCrop(24), ops.ColorJitter(brightness=0.3)],  # no crop first, no Normalize
    [ops.RandomCrop(24, padding=4), ops.Flip(), ops.Normalize()],  # its window decoded, then padded
    [ops.RandomCrop(24, padding=4, padding_mode="reflect"), ops.Flip(), ops.Normalize()],  # mirrored: from the window
    [ops.Resize(shorter=28), ops.RandomCrop(24), ops.Flip(), ops.Normalize()],
    [ops.RandomCrop(100, padding=2, fill=128), ops.Flip(vertical=True)],  # larger than the images: padded
    [ops.RandomResizedCrop(24), ops.Flip(), ops.ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8), ops.RandomGrayscale(p=0.2),
     ops.GaussianBlur(sigma=(0.1, 2.0), p=0.5), ops.RandomSolarize(p=0.2), ops.Normalize()],  # a BYOL view
    [ops.RandomResizedCrop(24), ops.Flip(horizontal=True, vertical=True),
     ops.RandomAffine(degrees=15, translate=(0.0625, 0.0625), scale=(0.9, 1.1), shear=5), ops.Normalize()],
    [ops.RandomResizedCrop(24), ops.Flip(), ops.TrivialAugmentWide(), ops.Normalize()],
    [ops.RandomResizedCrop(24), ops.Flip(), ops.RandAugment(num_ops=2, magnitude=9), ops.Normalize()],
], ids=["vflip", "colorjitter", "vflip-rotate", "blur", "rotate-then-crop", "random-crop", "random-crop-reflect",
        "resize-random-crop",
        "random-crop-padded", "byol", "affine", "trivialaugment", "randaugment"])
def test_every_op_list_runs_on_the_host_with_the_torch_backends_pixels(small_lmdb, augment):
    """On the CPU, DALI decodes (only the crop window of a leading random-resized crop) and the
    host stage runs the ops with the torch backend's code and the feed's draws: same pixels."""
    _host_matches_torch_backend(small_lmdb, augment=augment, image_size=24, shuffle=True, seed=4)


def test_an_op_failing_in_the_host_stage_names_the_op_and_record(small_lmdb, monkeypatch):
    def fails(self, image, params):
        raise ValueError("cannot rotate this")

    monkeypatch.setattr(ops.Rotate, "apply", fails)
    loader = fastload.Loader(small_lmdb, batch_size=4, augment=[ops.RandomResizedCrop(24), ops.Rotate(10)],
                             image_size=24, backend="dali", device="cpu", num_threads=2)
    with pytest.raises(fastload.ops.OpError, match=r"op Rotate\(.*\) failed on record \d+ \(epoch 0, seed 0\): "
                                                   r"ValueError: cannot rotate"):
        next(iter(loader))


@pytest.mark.parametrize("backend,threads,first", [("dali", 1, True), ("dali", 1, False), ("torch", 1, True),
                                                   ("torch", 0, False)],
                         ids=["dali-window-op", "dali-later-op", "torch-worker-window-op", "torch-main-later-op"])
def test_a_built_in_op_that_cannot_draw_names_the_op_and_record_on_both_backends(small_lmdb, backend, threads, first):
    """A crop larger than the images, without padding: the same error from the feed's draws
    (DALI), a worker process or the main process (torch), naming the record (not a worker's
    traceback, nor advice about damaged records)."""
    crop = ops.RandomCrop(200, pad_if_needed=False)
    augment = [crop] if first else [ops.Resize(shorter=40), crop]
    loader = fastload.Loader(small_lmdb, batch_size=4, augment=augment, backend=backend, device="cpu",
                             num_threads=threads)
    with pytest.raises(fastload.ops.OpError, match=r"op RandomCrop\(size=200.*\) failed on record \d+ \(epoch 0, "
                                                   r"seed 0\): ValueError: RandomCrop\(200\) of a \d+x\d+ image") as caught:
        next(iter(loader))
    assert "damaged" not in str(caught.value)


def test_an_op_list_of_varying_sizes_stays_in_dali(small_lmdb):
    """Images of their own sizes make no batch: DALI's path names the records (a tail may even them)."""
    loader = fastload.Loader(small_lmdb, batch_size=4, augment=[ops.Resize(shorter=30), ops.Normalize()],
                             image_size=24, backend="dali", device="cpu", num_threads=1)
    assert not loader._get_backend().lowered.host


@pytest.mark.parametrize("name,mode,dtype", [("gray", "L", np.uint8), ("deep", "RGB", np.uint16),
                                             ("gray16", "L", np.uint16)])
def test_sixteen_bit_and_gray_stores_run_on_the_host_with_the_torch_backends_pixels(tmp_path, name, mode, dtype):
    root = tmp_path / name / "x"
    root.mkdir(parents=True)
    for i in range(8):
        pixels = np.random.default_rng(i).integers(0, np.iinfo(dtype).max, (40, 48, 1 if mode == "L" else 3))
        _write_png(root / f"{i}.png", pixels.astype(dtype))
    out = str(tmp_path / f"{name}.lmdb")
    fastload.pack(str(tmp_path / name), out, options=fastload.PackOptions(workers=1, progress=False))
    augment = [ops.RandomResizedCrop(24), ops.Flip(horizontal=True, vertical=True), ops.Rotate(max_degrees=10),
               ops.RandomAffine(translate=(0.1, 0.1), scale=(0.9, 1.1), interpolation="nearest"), ops.Normalize()]
    _host_matches_torch_backend(out, augment=augment, image_size=24, shuffle=True, seed=2)


@fastload.op
def _dimmed(x):  # the op lists' cheap custom op
    return x * 0.9


@pytest.mark.parametrize("channels,dtype", [(3, np.float32), (1, np.float32), (6, np.uint16)],
                         ids=["rgb-float32", "gray-float32", "6ch-uint16"])
@pytest.mark.parametrize("augment", [
    [ops.RandomResizedCrop(24), ops.Flip(), ops.Normalize()],
    [ops.RandomResizedCrop(24), ops.Flip(), ops.ColorJitter(0.4, 0.4, 0.4, 0.1), ops.Normalize()],
    [ops.RandomResizedCrop(24), ops.Flip(horizontal=True, vertical=True), ops.Rotate(max_degrees=15),
     ops.Normalize()],
    [ops.RandomResizedCrop(24), ops.Flip(), ops.GaussianBlur(sigma=(0.1, 2.0), p=0.5), ops.Normalize()],
    [ops.RandomResizedCrop(24), ops.Flip(), ops.Normalize(), _dimmed],
    [ops.Resize(shorter=28), ops.CenterCrop(24), ops.Normalize()],
    [ops.RandomCrop(32, padding=4), ops.Flip(), ops.Normalize()],  # the feed lays out each window, then padded
], ids=["preset", "colorjitter", "radiology", "blur", "custom", "eval", "random-crop"])
def test_array_stores_of_every_pixel_type_run_on_the_host_with_the_torch_backends_batches(
        tmp_path_factory, channels, dtype, augment):
    """Arrays (.npy: float32 in 0..1, 6-channel uint16) take every op list in the host stage, as
    8-bit images do (float32 went to DALI's CPU operators: half the torch backend's rate, other
    pixels), and give the torch backend's batches bit for bit: no decoder differs, and both apply
    the feed's float32 draws."""
    images = [pixels(36 + i % 5, 40, channels, seed=i, dtype=np.uint16).reshape(36 + i % 5, 40, channels)
              for i in range(12)]
    if dtype == np.float32:
        images = [(image / 65535).astype(np.float32) for image in images]
    out = _array_store(tmp_path_factory.mktemp("arrays"), images)
    _host_matches_torch_backend(out, augment=augment, shuffle=True, seed=6, exact=True)


def _array_store(root, images) -> str:
    """An LMDB store of ``images`` as .npy files in two classes."""
    for i, image in enumerate(images):
        write(str(root / "d" / f"c{i % 2}" / f"{i}.npy"), npy(image))
    out = str(root / "arrays.lmdb")
    fastload.pack(str(root / "d"), out, options=fastload.PackOptions(workers=1, progress=False))
    return out


@pytest.mark.parametrize("tta", [["identity", "hflip"], ["ten-crop"], ["vflip", ops.Rotate(max_degrees=(10, 10))]],
                         ids=["hflip", "ten-crop", "vflip-rotate"])
@pytest.mark.parametrize("augment", ["eval", [ops.RandomResizedCrop(40), ops.CenterCrop(24), ops.Normalize()]],
                         ids=["eval", "crop-then-centre"])
def test_test_time_views_run_on_the_host_with_the_torch_backends_batches(small_lmdb, tta, augment):
    """On the CPU, test-time views are cut in the host stage with the torch backend's code
    (``tta.apply_view``): ``(B, V, C, H, W)`` batches of its pixels (DALI's CPU operators made
    other ones, at half the rate: RESULTS 21)."""
    lowered = _host_matches_torch_backend(small_lmdb, augment=augment, image_size=24, tta=tta, seed=2)
    assert lowered.views and lowered.final_crop is not None


def test_test_time_views_of_arrays_are_bit_equal_on_both_backends(tmp_path):
    out = _array_store(tmp_path, [(pixels(30 + i, 36, 3, seed=i, dtype=np.uint16) / 65535).astype(np.float32)
                                  for i in range(6)])
    _host_matches_torch_backend(out, augment="eval", image_size=24, tta=["ten-crop", "vflip"], exact=True)


def _write_png(path, pixels):
    import cv2

    image = pixels[..., 0] if pixels.shape[-1] == 1 else pixels[..., ::-1]
    assert cv2.imwrite(str(path), image)


def test_a_feed_worker_whose_loader_closed_ends_quietly(small_lmdb):
    """A loader closed while a feed worker answers: the worker ends without a traceback (a
    BrokenPipeError traceback used to end scripts that closed a loader mid-epoch)."""
    import subprocess
    import sys

    from fastload.backends.dali.feed import FeedSpec
    from fastload.workers.channel import send_message

    spec = FeedSpec(paths=(small_lmdb,), mode="encoded", verify=True, seed=0, ops=())
    worker = subprocess.Popen([sys.executable, "-m", "fastload.backends.dali.worker", "--slots", ""],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    worker.stdout.close()  # the loader is gone before the worker's first answer
    send_message(worker.stdin.fileno(), spec.to_json())
    worker.stdin.close()
    assert worker.wait(60) == 0
    assert worker.stderr.read() == b""


def test_the_feed_lays_out_a_raw_records_window_alone(small_folder, tmp_path):
    """A raw record read whole, its crop window copied into the slot (the host stage resizes it as
    it comes); a window that does not fit the record names the record."""
    from fastload.backends.dali.feed import FeedReader, FeedSpec

    store = str(tmp_path / "raw.lmdb")
    fastload.pack(small_folder, store, options=fastload.PackOptions(payload="raw", workers=1, progress=False))
    crop = ops.RandomResizedCrop(8)
    reader = FeedReader(FeedSpec(paths=(store,), mode="arrays", verify=True, seed=0, ops=(crop.to_config(),),
                                 windows=True))
    assert reader.raw_as_is and reader.window_op is not None
    whole = np.asarray(fastload.open_store(store).decode(2))
    out, span = np.zeros(whole.nbytes, np.uint8), np.zeros(4, np.int64)
    reader._write(2, out, (3, 5, 7, 9), span)
    assert span[1:].tolist() == [7 * 9 * whole.shape[2], 7, 9]
    np.testing.assert_array_equal(out[: span[1]].reshape(7, 9, whole.shape[2]), whole[3:10, 5:14])
    with pytest.raises(fastload.CorruptRecordError, match="record 2"):
        reader._write(2, out, (0, 0, whole.shape[0] + 1, 4), span)
