"""Packing folders into LMDB and HDF5: exact pixels, metadata, atomicity, verify."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from storefiles import flip_byte_in_record

import fastload
from fastload.sample import SampleSpec, make_sample_folder


def _reference(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def folder_2000(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("big") / "data"
    make_sample_folder(root, SampleSpec(num_classes=5, per_class=400, short_side=(32, 48)))
    return str(root)


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_2000_jpegs_decode_to_source_pixels(folder_2000, tmp_path, fmt):
    out = str(tmp_path / f"train.{fmt}")
    summary = fastload.pack(folder_2000, out, options=fastload.PackOptions(format=fmt, workers=2, progress=False))
    assert summary.packed == 2000 and not summary.skipped
    store = fastload.open_store(out)
    assert len(store) == 2000
    assert store.classes == [f"class_{i:03d}" for i in range(5)]
    assert store.labels.dtype == np.int64
    assert np.array_equal(store.labels, np.repeat(np.arange(5), 400))
    for i in range(len(store)):
        payload, label = store.get(i)
        with open(store.paths[i], "rb") as f:
            assert payload == f.read()  # original bytes, no re-encoding
        assert np.array_equal(store.decode(i), _reference(store.paths[i]))


def test_record_order_independent_of_workers(small_folder, tmp_path):
    one = fastload.pack(small_folder, tmp_path / "a.lmdb", options=fastload.PackOptions(workers=1, progress=False))
    two = fastload.pack(small_folder, tmp_path / "b.lmdb", options=fastload.PackOptions(workers=2, progress=False))
    assert one.packed == two.packed
    a, b = fastload.open_store(tmp_path / "a.lmdb"), fastload.open_store(tmp_path / "b.lmdb")
    assert a.paths == b.paths == sorted(a.paths)
    assert all(a.read(i) == b.read(i) for i in range(len(a)))


def test_default_output_beside_folder_and_overwrite(small_folder, tmp_path):
    import shutil

    src = tmp_path / "data"
    shutil.copytree(small_folder, src)
    fastload.pack(src, options=fastload.PackOptions(workers=1, progress=False))
    assert os.path.isfile(tmp_path / "data.lmdb")
    with pytest.raises(fastload.StoreExistsError):
        fastload.pack(src, options=fastload.PackOptions(workers=1, progress=False))
    fastload.pack(src, options=fastload.PackOptions(workers=1, progress=False, overwrite=True))
    assert sorted(os.listdir(tmp_path)) == ["data", "data.lmdb", "data.lmdb.report.json"]


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_verify_names_flipped_byte(small_folder, tmp_path, fmt):
    out = str(tmp_path / f"s.{fmt}")
    fastload.pack(small_folder, out, options=fastload.PackOptions(format=fmt, workers=1, progress=False))
    target = 5
    flip_byte_in_record(out, target)
    from fastload.cli import main

    assert main(["verify", out, "-q"]) == 1
    bad = fastload.inspect.verify_store(fastload.open_store(out), progress=False)
    assert [b.index for b in bad] == [target]
    with pytest.raises(fastload.CorruptRecordError, match="record 5"):
        fastload.open_store(out).get(target)


def test_store_pickles_as_path(small_lmdb):
    import pickle

    store = fastload.open_store(small_lmdb)
    store.get(0)
    clone = pickle.loads(pickle.dumps(store))  # noqa: S301 - our own object, in-process
    assert clone._handle is None and clone.path == store.path
    assert clone.get(1)[0] == store.get(1)[0]
