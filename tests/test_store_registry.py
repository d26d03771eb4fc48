"""The store format registry: formats recognised by content or name, URL schemes claimed by a
plugin without touching the disk, and the Loader's question "is this path a store?"."""

from __future__ import annotations

import pytest
from imagefiles import jpeg, write

import fastload
from fastload.stores import REGISTRY, FormatRegistry, Match, StoreFormat


def test_built_in_formats_and_what_pack_writes():
    assert [f.name for f in REGISTRY] == ["lmdb", "hdf5", "sharded", "files", "remote"]
    assert REGISTRY.match("s3://bucket/x.lmdb")[0] is REGISTRY["remote"]  # a URL is never a local path
    assert sorted(fastload.stores.FORMATS) == ["hdf5", "lmdb"]
    assert REGISTRY["hdf5"].extensions == (".h5", ".hdf5") and REGISTRY["lmdb"].extension == ".lmdb"


def test_is_store_by_content_or_name(small_lmdb, small_folder, tmp_path):
    assert REGISTRY.is_store(small_lmdb)
    assert REGISTRY.is_store(str(tmp_path / "damaged.h5"))  # named like one: its reader says what is wrong
    assert not REGISTRY.is_store(small_folder)
    assert not REGISTRY.is_store(write(str(tmp_path / "a.jpg"), jpeg()))
    assert REGISTRY.match(small_folder)[0].name == "files"


def test_a_plugin_claims_a_url_scheme(tmp_path):
    opened = []

    def open_remote(path: str, *, strict: bool = True):
        opened.append(path)
        return fastload.open_store(str(tmp_path / "x.lmdb"))  # stands for a remote store here

    registry = FormatRegistry()
    registry.register(StoreFormat("remote", (), lambda path: Match.NONE, open_remote, schemes=("mem",)))
    fmt, found = registry.match("mem://bucket/train.lmdb")
    assert fmt.name == "remote" and found == Match.CONTENT and registry.is_store("mem://bucket/train.lmdb")
    assert registry.match("C:/data/train.lmdb") == (None, Match.NONE)  # a drive letter is no scheme
    with pytest.raises(ValueError, match="claimed already"):
        registry.register(StoreFormat("other", (), lambda path: Match.NONE, open_remote, schemes=("mem",)))
    with pytest.raises(fastload.StoreFormatError, match="not a fastload store"):
        registry.identify("gs://bucket/train.lmdb")
