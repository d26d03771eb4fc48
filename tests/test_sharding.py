"""Sharded packing (--shard-size, --num-shards/--shard-index) read back as one dataset."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from imagefiles import write

import fastload
from fastload.inspect import inspect_path, inspect_store, verify_store

OPTIONS = dict(workers=1, progress=False)


@pytest.fixture(scope="module")
def whole(small_folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("whole") / "all.lmdb")
    fastload.pack(small_folder, out, options=fastload.PackOptions(**OPTIONS))
    return fastload.open_store(out)


def _same_records(a, b) -> None:
    assert len(a) == len(b) and a.classes == b.classes and a.paths == b.paths
    assert np.array_equal(a.labels, b.labels)
    assert all(a.read(i) == b.read(i) for i in range(len(a)))


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_shard_size_concatenates_to_the_whole(small_folder, whole, tmp_path, fmt):
    ext = ".lmdb" if fmt == "lmdb" else ".h5"
    summary = fastload.pack(small_folder, str(tmp_path / f"d{ext}"),
                            options=fastload.PackOptions(format=fmt, shard_size=10, **OPTIONS))
    names = [f"d-0000{i}-of-00003{ext}" for i in range(3)]
    assert [os.path.basename(p) for p in summary.outputs] == names
    assert summary.packed == 24
    shards = [fastload.open_store(str(tmp_path / n)) for n in names]
    assert [len(s) for s in shards] == [8, 8, 8]
    assert all(s.classes == whole.classes for s in shards)
    assert [s.header.shard for s in shards] == [{"index": i, "count": 3} for i in range(3)]
    from_glob = fastload.open_store(str(tmp_path / f"d-*{ext}"))
    from_list = fastload.open_store([str(tmp_path / n) for n in names])
    assert isinstance(from_glob, fastload.ShardedStore)
    _same_records(from_glob, whole)
    _same_records(from_list, whole)
    assert np.array_equal(from_glob.decode(23), whole.decode(23))
    assert np.array_equal(from_glob.decode(-1), whole.decode(23))
    with pytest.raises(IndexError):
        from_glob.get(24)


def test_num_shards_written_separately_equal_the_whole(small_folder, whole, tmp_path):
    out = str(tmp_path / "p.h5")
    for index in (2, 0, 1):  # any order, as separate processes or nodes would
        options = fastload.PackOptions(format="hdf5", num_shards=3, shard_index=index, **OPTIONS)
        summary = fastload.pack(small_folder, out, options=options)
        assert summary.outputs == [str(tmp_path / f"p-{index:05d}-of-00003.h5")]
    _same_records(fastload.open_store(str(tmp_path / "p-*.h5")), whole)


def test_inspect_and_verify_on_shards(small_folder, whole, tmp_path):
    fastload.pack(small_folder, str(tmp_path / "d.lmdb"),
                  options=fastload.PackOptions(shard_size=7, **OPTIONS))
    pattern = str(tmp_path / "d-*.lmdb")
    assert len(glob.glob(pattern)) == 4
    sharded = inspect_path(pattern, progress=False)
    single = inspect_store(whole)
    for key in ("count", "classes", "per_class", "imbalance", "bytes", "height", "width",
                "channels", "dtype", "encoding"):
        assert sharded[key] == single[key], key
    assert np.allclose(sharded["mean"], single["mean"], atol=1e-5)
    assert np.allclose(sharded["std"], single["std"], atol=1e-5)
    assert verify_store(fastload.open_store(pattern), progress=False) == []


def test_skipped_inputs_are_reported_once(small_folder, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(small_folder, root)
    write(str(root / "class_002" / "zz_empty.jpg"), b"")  # lands in the last shard
    os.symlink(str(tmp_path / "nowhere"), root / "class_000" / "dangling.jpg")  # listing stage
    summary = fastload.pack(str(root), str(tmp_path / "d.lmdb"),
                            options=fastload.PackOptions(shard_size=9, **OPTIONS))
    assert summary.packed == 24 and len(summary.skipped) == 2
    store = fastload.open_store(str(tmp_path / "d-*.lmdb"))
    skipped = [os.path.basename(s["path"]) for shard in store.shards for s in shard.header.skipped]
    assert sorted(skipped) == ["dangling.jpg", "zz_empty.jpg"]
    assert inspect_store(store)["skipped"] == 2


def test_shards_from_different_sources_are_refused(small_folder, tmp_path):
    fastload.pack(small_folder, str(tmp_path / "a.lmdb"), options=fastload.PackOptions(**OPTIONS))
    other = tmp_path / "other"
    write(str(other / "zebra" / "z.jpg"), open(glob.glob(f"{small_folder}/*/*.jpg")[0], "rb").read())
    fastload.pack(str(other), str(tmp_path / "b.lmdb"), options=fastload.PackOptions(**OPTIONS))
    with pytest.raises(fastload.StoreFormatError, match="classes differ"):
        fastload.open_store([str(tmp_path / "a.lmdb"), str(tmp_path / "b.lmdb")])


def test_sharding_options_are_checked():
    with pytest.raises(ValueError, match="go together"):
        fastload.PackOptions(num_shards=4)
    with pytest.raises(ValueError, match="not both"):
        fastload.PackOptions(num_shards=4, shard_index=0, shard_size=10)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        fastload.PackOptions(num_shards=4, shard_index=4)


def test_shards_read_as_one_dataset_with_merged_header(tmp_path, small_folder):
    """A sharded dataset's header, statistics (mean="store") and dtype are the whole dataset's,
    as `fastload inspect` reports them, not shard 0's."""
    import numpy as np

    from fastload.inspect import inspect_store

    out = tmp_path / "sharded.lmdb"
    fastload.pack(small_folder, out, options=fastload.PackOptions(workers=1, progress=False, shard_size=10))
    shards = sorted(str(p) for p in tmp_path.glob("sharded-*.lmdb"))
    assert len(shards) == 3
    whole = fastload.open_store(shards)
    assert whole.header.count == len(whole) == 24
    assert whole.header.stats["mean"] == inspect_store(whole)["mean"]
    assert whole.header.stats["mean"] != fastload.open_store(shards[0]).header.stats["mean"]
    single = tmp_path / "single.lmdb"
    fastload.pack(small_folder, single, options=fastload.PackOptions(workers=1, progress=False))
    np.testing.assert_allclose(whole.header.stats["mean"], fastload.open_store(single).header.stats["mean"], atol=1e-4)
    loader = fastload.Loader(shards, batch_size=8, augment="eval", image_size=16, mean="store", backend="torch",
                             device="cpu", num_threads=0)
    assert loader.ops[-1].mean == tuple(whole.header.stats["mean"])
