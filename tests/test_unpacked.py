"""New data without packing (a Loader over files), test-time views, and index subsets."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import fastload
from fastload import ops
from fastload.loader import dali_available

BACKENDS = ["torch"] + (["dali"] if dali_available() else [])


def _image(path, i: int, size=(40, 52)) -> None:
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    pixels = np.stack([(x * 4 + i * 20) % 256, (y * 4) % 256, np.full_like(x, (i * 37) % 256)], -1)
    pixels = np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


@pytest.fixture(scope="module")
def test_folder(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("unpacked") / "test"
    root.mkdir()
    for i in range(11):
        _image(root / f"img_{i:02d}.{'png' if i % 4 == 0 else 'jpg'}", i)
    (root / "readme.txt").write_text("not an image")
    (root / "empty.jpg").write_bytes(b"")
    return str(root)


def _loader(source, backend, **kw):
    kw.setdefault("augment", "eval")
    kw.setdefault("image_size", 32)
    kw.setdefault("batch_size", 4)
    return fastload.Loader(source, backend=backend, device="cpu", num_threads=1, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_folder_yields_every_file_once_in_order_with_its_name(test_folder, backend):
    with pytest.warns(UserWarning, match=r"2 of the files .* left out: .*empty.jpg: empty file"):
        loader = _loader(test_folder, backend)
    assert {os.path.basename(s.path) for s in loader.skipped} == {"readme.txt", "empty.jpg"}
    batches = list(loader)
    keys = [k for _, ks in batches for k in ks]
    assert keys == [f"img_{i:02d}.{'png' if i % 4 == 0 else 'jpg'}" for i in range(11)]
    assert [len(x) for x, _ in batches] == [4, 4, 3]  # the last batch is kept
    assert all(x.shape[1:] == (3, 32, 32) for x, _ in batches)


def test_both_backends_give_the_same_images(test_folder):
    if not dali_available():
        pytest.skip("DALI not installed")
    with pytest.warns(UserWarning):
        dali = torch.cat([x for x, _ in _loader(test_folder, "dali")])
    with pytest.warns(UserWarning):
        ref = torch.cat([x for x, _ in _loader(test_folder, "torch")])
    assert (dali - ref).abs().mean().item() < 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_that_does_not_decode_is_named(tmp_path, backend):
    """A truncated JPEG passes the header check made when the loader opens; decoding it fails,
    and the error names the file (DALI's own message names no sample) and what to do."""
    for i in range(6):
        _image(tmp_path / f"img_{i}.jpg", i)
    whole = (tmp_path / "img_5.jpg").read_bytes()
    (tmp_path / "img_5.jpg").write_bytes(whole[: len(whole) // 3])
    loader = _loader(str(tmp_path), backend)
    assert not loader.skipped
    with pytest.raises(fastload.FastloadError, match=r"img_5\.jpg: cannot be decoded") as caught:
        list(loader)
    if backend == "dali":
        assert "img_4.jpg" not in str(caught.value) and "fastload pack" in str(caught.value)


def test_globs_lists_labels_and_csvs(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(3):
            _image(tmp_path / "train" / label / f"{label}{i}.jpg", i)
    labelled = _loader(str(tmp_path / "train"), "torch", batch_size=6)
    _, labels = next(iter(labelled))
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and labelled.dataset.classes == ["cat", "dog"]
    by_glob = _loader(str(tmp_path / "train" / "dog" / "*.jpg"), "torch", batch_size=6)
    assert next(iter(by_glob))[1] == ["dog0.jpg", "dog1.jpg", "dog2.jpg"]
    files = [str(tmp_path / "train" / "cat" / n) for n in ("cat2.jpg", "cat0.jpg")]
    assert len(next(iter(_loader(files, "torch")))[1]) == 2
    csv = tmp_path / "order.csv"
    csv.write_text("path\ndog/dog2.jpg\ncat/cat1.jpg\n")
    ordered = _loader(str(tmp_path / "train"), "torch", labels=str(csv))
    assert next(iter(ordered))[1] == [os.path.join("dog", "dog2.jpg"), os.path.join("cat", "cat1.jpg")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_tta_views(test_folder, backend):
    with pytest.warns(UserWarning):
        loader = _loader(test_folder, backend, tta=["identity", "hflip", "vflip", "ten-crop"])
    images, keys = next(iter(loader))
    assert images.shape == (4, 13, 3, 32, 32) and len(keys) == 4
    assert torch.equal(images[:, 1], images[:, 0].flip(-1))  # hflip: the identity view mirrored
    assert torch.equal(images[:, 3 + 5 + 4], images[:, 3 + 4].flip(-1))  # ten-crop: mirrored centre
    assert not torch.equal(images[:, 3], images[:, 4])  # corners differ


def test_tta_views_agree_between_backends(test_folder):
    if not dali_available():
        pytest.skip("DALI not installed")
    views = ["identity", "vflip", "five-crop", ops.Rotate(max_degrees=(10, 10))]
    with pytest.warns(UserWarning):
        dali = torch.cat([x for x, _ in _loader(test_folder, "dali", tta=views)])
    with pytest.warns(UserWarning):
        ref = torch.cat([x for x, _ in _loader(test_folder, "torch", tta=views)])
    assert dali.shape == ref.shape == (11, 8, 3, 32, 32)
    for v in range(dali.shape[1]):
        assert (dali[:, v] - ref[:, v]).abs().mean().item() < 0.1, v


def test_one_tta_view_name_alone_is_a_list_of_one():
    """``tta="ten-crop"`` (a name alone, as people write it) is ``["ten-crop"]``, not its letters."""
    from fastload.tta import resolve_views

    assert resolve_views("ten-crop") == resolve_views(["ten-crop"]) and len(resolve_views("ten-crop")) == 10
    flip = ops.Flip(horizontal=True, p=1.0)
    assert resolve_views(flip) == resolve_views([flip])


def test_tta_needs_a_final_crop_and_fixed_ops(small_lmdb):
    with pytest.raises(ValueError, match="CenterCrop"):
        fastload.Loader(small_lmdb, augment=[ops.Resize(size=32)], tta=["five-crop"], backend="torch")
    with pytest.raises(ValueError, match="deterministic"):
        fastload.Loader(small_lmdb, augment="eval", tta=[ops.Rotate(max_degrees=10)], backend="torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_indices_restrict_the_loader_with_its_epochs_and_ranks(small_lmdb, backend):
    store = fastload.open_store(small_lmdb)
    subset = np.arange(0, len(store), 2)
    loader = _loader(small_lmdb, backend, indices=subset, shuffle=True, batch_size=5, augment=[ops.CenterCrop(8)],
                     output_dtype="uint8")
    dataset = loader.dataset
    assert len(dataset) == len(subset) and len(loader) == -(-len(subset) // 5)
    first = torch.cat([y for _, y in loader])
    second = torch.cat([y for _, y in loader])
    assert sorted(first.tolist()) == sorted(store.labels[subset].tolist()) == sorted(second.tolist())
    ranks = [_loader(small_lmdb, backend, indices=subset, shuffle=True, rank=r, world_size=2, batch_size=3,
                     augment=[ops.CenterCrop(8)], output_dtype="uint8") for r in range(2)]
    seen = [list(ranks[r].batch_sampler) for r in range(2)]
    flat = [sorted(i for batch in s for i in batch) for s in seen]
    assert set(flat[0]) | set(flat[1]) == set(subset.tolist()) and set(flat[0]) <= set(subset.tolist())
