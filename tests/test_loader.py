"""The Loader's contract, checked on the torch backend (and on DALI's where installed).

Every image of the ``tagged`` store is a flat colour that encodes its record index, so a batch
tells exactly which records it holds, whatever the augmentation (crops and flips of a flat image
keep its colour).
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch
from storefiles import flip_byte_in_record

import fastload
from fastload import ops
from fastload.loader import dali_available

BACKENDS = ["torch"] + (["dali"] if dali_available() else [])
N = 53  # not a multiple of any batch size used below


@fastload.batch_op
def _as_is(images):
    return images


@pytest.fixture(scope="module")
def tagged(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("tagged") / "data"
    for i in range(N):
        folder = root / f"class_{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        image = np.empty((40 + i % 7, 48, 3), np.uint8)
        image[...] = (i, 255 - i, 128)  # BGR on disk; the tag survives RGB conversion as (128, 255-i, i)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    out = str(root) + ".lmdb"
    fastload.pack(root, out, options=fastload.PackOptions(workers=1, progress=False))
    return out


def _records(images: torch.Tensor) -> list[int]:
    """Record tags from uint8 NHWC batches (blue channel holds the tag)."""
    return images[:, 0, 0, 2].tolist()


def _loader(store: str, backend: str = "torch", **kw) -> fastload.Loader:
    kw.setdefault("batch_size", 8)
    kw.setdefault("num_threads", 0 if backend == "torch" else 1)
    return fastload.Loader(store, augment=[ops.CenterCrop(16)], output_dtype="uint8", layout="NHWC",
                           backend=backend, device="cpu", **kw)


def _epoch(loader: fastload.Loader) -> tuple[list[int], list[int], list[int]]:
    tags, labels, sizes = [], [], []
    for images, target in loader:
        tags += _records(images)
        labels += target.tolist()
        sizes.append(len(images))
    return tags, labels, sizes


@pytest.fixture(scope="module")
def tag_of(tagged) -> dict[int, int]:
    store = fastload.open_store(tagged)
    return {int(store.decode(i)[0, 0, 2]): i for i in range(len(store))}


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_sample_once_per_epoch(tagged, tag_of, backend):
    loader = _loader(tagged, backend, shuffle=True, seed=3)
    assert len(loader) == -(-N // 8)
    store = fastload.open_store(tagged)
    for _ in range(2):
        tags, labels, sizes = _epoch(loader)
        records = [tag_of[t] for t in tags]
        assert sorted(records) == list(range(N))
        assert labels == store.labels[records].tolist()
        assert sizes == [8] * (N // 8) + [N % 8]


def test_drop_last_gives_full_batches_only(tagged):
    loader = _loader(tagged, drop_last=True, shuffle=True)
    assert len(loader) == N // 8
    _, _, sizes = _epoch(loader)
    assert sizes == [8] * (N // 8)


def test_order_reshuffles_per_epoch_and_repeats_per_seed(tagged):
    a, b = _loader(tagged, shuffle=True, seed=1), _loader(tagged, shuffle=True, seed=1)
    first = _epoch(a)[0]
    assert first == _epoch(b)[0]  # same seed, same epoch: same order
    a.set_epoch(5)
    assert _epoch(a)[0] != first  # new epoch: new order
    c = _loader(tagged, shuffle=True, seed=1, num_threads=2)
    c.set_epoch(5)
    b.set_epoch(5)
    assert _epoch(c)[0] == _epoch(b)[0]  # worker count does not change the order


def test_unshuffled_order_is_record_order(tagged, tag_of):
    tags = _epoch(_loader(tagged, shuffle=False))[0]
    assert [tag_of[t] for t in tags] == list(range(N))


def test_seeded_augmentation_is_deterministic_across_workers(small_lmdb):
    def run(threads):
        loader = fastload.Loader(small_lmdb, batch_size=5, augment="train", image_size=32, shuffle=True,
                                 seed=7, backend="torch", device="cpu", num_threads=threads)
        return [x for x, _ in loader]

    for x, y in zip(run(0), run(2), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_mid_epoch_yields_exactly_the_rest(tagged, backend):
    full = _loader(tagged, backend, shuffle=True, seed=11)
    full.set_epoch(2)
    expected = _epoch(full)[0]
    first = _loader(tagged, backend, shuffle=True, seed=11)
    first.set_epoch(2)
    seen = []
    for k, (images, _) in enumerate(first):
        seen += _records(images)
        if k == 2:
            break
    state = first.state_dict()
    assert state["epoch"] == 2 and state["batch"] == 3
    resumed = _loader(tagged, backend, shuffle=True, seed=11)
    resumed.load_state_dict(state)
    rest = _epoch(resumed)[0]
    assert seen + rest == expected
    assert resumed.state_dict()["epoch"] == 3  # the pass completed the epoch


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_pass_is_a_new_epoch_even_after_a_peek(tagged, tag_of, backend):
    loader = _loader(tagged, backend, shuffle=True, seed=2)
    first, _ = next(iter(loader))  # a peek, as people check shapes before training: epoch 0
    tags = _epoch(loader)[0]  # epoch 1, whole
    assert sorted(tag_of[t] for t in tags) == list(range(N))
    reference = _loader(tagged, backend, shuffle=True, seed=2)
    reference.set_epoch(1)
    assert tags == _epoch(reference)[0]
    assert tags[: len(first)] != _records(first)
    assert loader.state_dict()["epoch"] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_passes_that_stop_at_len_still_advance_the_epoch(tagged, backend):
    """Lightning's loop takes exactly len(loader) batches and never sees StopIteration."""
    loader = _loader(tagged, backend, shuffle=True, seed=6)
    orders = []
    for _ in range(2):
        it = iter(loader)
        orders.append([t for _ in range(len(loader)) for t in _records(next(it)[0])])
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
    assert loader.state_dict()["epoch"] == 2


def test_resume_refuses_different_settings(tagged):
    state = _loader(tagged, shuffle=True, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        _loader(tagged, shuffle=True, seed=2).load_state_dict(state)


def test_ranks_get_disjoint_shards_and_equal_batches(tagged, tag_of):
    ranks = [_loader(tagged, shuffle=True, seed=4, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    tags = [_epoch(r)[0] for r in ranks]
    records = [{tag_of[t] for t in ts} for ts in tags]
    assert len(tags[0]) == len(tags[1])
    assert records[0] | records[1] == set(range(N))
    assert len(records[0] & records[1]) <= 1  # N is odd: one record pads the last rank


def test_balanced_sampler_evens_out_classes(tmp_path):
    from fastload.sample import SampleSpec, make_sample_folder

    root = tmp_path / "imb"
    make_sample_folder(root, SampleSpec(num_classes=2, per_class=4, short_side=(24, 32)), workers=1)
    extra = SampleSpec(num_classes=1, per_class=36, short_side=(24, 32), seed=9)
    make_sample_folder(tmp_path / "more", extra, workers=1)
    for name in os.listdir(tmp_path / "more" / "class_000"):
        os.rename(tmp_path / "more" / "class_000" / name, root / "class_000" / f"x{name}")
    fastload.pack(root, tmp_path / "imb.lmdb", options=fastload.PackOptions(workers=1, progress=False))
    loader = fastload.Loader(tmp_path / "imb.lmdb", batch_size=16, augment=[ops.CenterCrop(8)], output_dtype="uint8",
                             sampler="balanced", num_samples=800, backend="torch", device="cpu", num_threads=0)
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == 800
    share = (labels == 1).float().mean().item()
    assert 0.4 < share < 0.6  # 4 of 44 records, drawn half of the time


def test_train_preset_output_format(small_lmdb):
    loader = fastload.Loader(small_lmdb, batch_size=4, augment="train", image_size=32, backend="torch",
                             device="cpu", num_threads=0)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    half = fastload.Loader(small_lmdb, batch_size=4, augment="eval", image_size=32, backend="torch",
                           device="cpu", num_threads=0, output_dtype="float16", layout="NHWC")
    images, _ = next(iter(half))
    assert images.shape == (4, 32, 32, 3) and images.dtype == torch.float16


def test_eval_preset_matches_numpy_reference(small_lmdb):
    store = fastload.open_store(small_lmdb)
    loader = fastload.Loader(store, batch_size=4, augment="eval", image_size=32, backend="torch",
                             device="cpu", num_threads=0)
    images, _ = next(iter(loader))
    rng = np.random.default_rng(0)
    for i in range(4):
        ref = store.decode(i)
        for op in ops.preset("eval", 32):
            ref = op.numpy(ref, rng)
        np.testing.assert_allclose(images[i].permute(1, 2, 0).numpy(), ref, atol=1e-5)


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_eval_preset_equal_between_backends(small_lmdb):
    def batches(backend):
        loader = fastload.Loader(small_lmdb, batch_size=8, augment="eval", image_size=32, backend=backend,
                                 device="cpu", num_threads=1)
        return torch.cat([x for x, _ in loader])

    torch_out, dali_out = batches("torch"), batches("dali")
    assert torch_out.shape == dali_out.shape
    diff = (torch_out - dali_out).abs()
    # Normalized units (1/std ~ 4.4 per unit of [0,1]): resamplers differ slightly at edges.
    assert diff.mean().item() < 0.05, diff.mean().item()


def test_missing_store_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.lmdb"):
        fastload.Loader(tmp_path / "nope.lmdb", backend="torch")


def test_store_deleted_under_running_loader_is_named(small_folder, tmp_path):
    out = tmp_path / "gone.lmdb"
    fastload.pack(small_folder, out, options=fastload.PackOptions(workers=1, progress=False))
    loader = fastload.Loader(out, batch_size=4, augment="eval", image_size=16, backend="torch",
                             device="cpu", num_threads=1)
    os.remove(out)
    with pytest.raises(Exception, match="gone.lmdb"):
        next(iter(loader))


def test_corrupt_record_is_named(small_folder, tmp_path):
    out = str(tmp_path / "bad.lmdb")
    fastload.pack(small_folder, out, options=fastload.PackOptions(workers=1, progress=False))
    flip_byte_in_record(out, 2)
    loader = fastload.Loader(out, batch_size=4, augment="eval", image_size=16, backend="torch",
                             device="cpu", num_threads=1)
    with pytest.raises(Exception, match="record 2"):
        list(loader)


def test_killed_worker_raises_instead_of_hanging(small_lmdb):
    import signal

    loader = fastload.Loader(small_lmdb, batch_size=1, augment="eval", image_size=16, backend="torch",
                             device="cpu", num_threads=2, prefetch=1)
    it = iter(loader)
    next(it)
    workers = loader._get_backend()._all[0]._iterator._workers  # the DataLoader's processes
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].join()
    # torch reports the death from its SIGCHLD handler or its queue watchdog; either way an
    # error naming the worker, never a hang.
    with pytest.raises((fastload.WorkerDiedError, RuntimeError), match="killed|died"):
        for _ in it:
            pass


@pytest.mark.parametrize("backend", ["dali", "torch"])
@pytest.mark.parametrize("augment", ["eval", "train"])  # train: a raw record's crop window, from Store.decode(window)
def test_verify_false_reads_records_whose_checksum_fails(small_folder, tmp_path, backend, augment):
    """``verify=False`` skips the checksum on every read path: a raw record with one pixel changed
    (still an array) is refused with ``verify=True`` and read without."""
    if backend == "dali" and not dali_available():
        pytest.skip("DALI not installed")
    store = str(tmp_path / "raw.lmdb")
    fastload.pack(small_folder, store, options=fastload.PackOptions(payload="raw", workers=1, progress=False))
    flip_byte_in_record(store, 4)
    kw = dict(batch_size=4, augment=augment, image_size=16, backend=backend, device="cpu", num_threads=1)
    with pytest.raises(fastload.CorruptRecordError, match="record 4"):
        list(fastload.Loader(store, **kw))
    assert sum(len(labels) for _, labels in fastload.Loader(store, verify=False, **kw)) == 24


@pytest.mark.skipif(not dali_available(), reason="DALI not installed")
def test_auto_takes_dali_where_it_has_work_of_its_own(small_lmdb, small_folder, tmp_path):
    """``backend="auto"``: DALI for a store its decoders read, on the GPU and for a batch op; the
    torch backend on the CPU for a store DALI decodes nothing of (its ops run in worker processes)."""
    from fastload.backends.factory import resolve_backend

    raw = str(tmp_path / "raw.lmdb")
    fastload.pack(small_folder, raw, options=fastload.PackOptions(payload="raw", workers=1, progress=False))
    assert fastload.Loader(small_lmdb, batch_size=4, device="cpu").backend_name == "dali"
    assert fastload.Loader(raw, batch_size=4, device="cpu").backend_name == "torch"
    assert fastload.Loader(raw, batch_size=4, device="cpu", backend="dali").backend_name == "dali"
    store = fastload.open_store(raw)
    assert resolve_backend("auto", device="cuda", store=store) == "dali"  # the GPU's ops, even without a decode
    # a batch op: the DALI backend hands it whole batches (the torch backend, batches of one)
    assert resolve_backend("auto", device="cpu", store=store, ops=[_as_is.with_args()]) == "dali"
    assert resolve_backend("auto", device="cpu", store=store, ops=[ops.CenterCrop(8)]) == "torch"
