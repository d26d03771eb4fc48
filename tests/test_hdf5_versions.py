"""HDF5 store format versions: version 2 (strings as uint8 JSON blobs, no HDF5 variable-length
strings, so no global heap) is what the packer writes; version 1 stores (variable-length strings,
as fastload wrote them before) still open, read through h5py."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import fastload
from fastload.inspect import verify_store
from fastload.stores import RecordTable, StoreHeader
from fastload.stores.format import ARRAY_DTYPES, checksum
from fastload.stores.hdf5_store import Hdf5Writer

h5py = pytest.importorskip("h5py")

PATHS = ["a/0.jpg", "b/é ü.png", "b/\\xff.jpg"]
SITES = ["north", "süd", "north"]


def _table(payloads: list[bytes]) -> RecordTable:
    n = len(payloads)
    return RecordTable.from_arrays({
        "labels": np.array([0, 1, 1]), "checksums": np.array([checksum(p) for p in payloads], np.uint64),
        "shapes": np.ones((n, 3)), "encodings": np.zeros(n), "dtypes": np.zeros(n),
        "nbytes": np.array([len(p) for p in payloads])}, list(PATHS), n, "<test>")


def _write_v1(path: str, payloads: list[bytes]) -> None:
    """A version-1 store, written with h5py as fastload's writer did: variable-length UTF-8
    strings for the header attribute, the paths and a string column's values."""
    table = _table(payloads)
    column = {"name": "site", "kind": "string", "dtype": "<i4", "encoding": "categorical"}
    header = StoreHeader(len(payloads), "encoded", ["a", "b"], ["jpeg"], ["uint8"], 3,
                         metadata_columns=[column], format_version=1)
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("data", data=np.frombuffer(b"".join(payloads), np.uint8), chunks=(1 << 20,),
                         maxshape=(None,))
        f.create_dataset("offsets", data=np.cumsum([0] + [len(p) for p in payloads]).astype("<u8"))
        for name, array in table.arrays().items():
            f.create_dataset(name, data=np.ascontiguousarray(array, dtype=ARRAY_DTYPES[name][0]))
        f.create_dataset("paths", data=table.paths, dtype=text)
        group = f.create_group("metadata")
        group.create_dataset("0", data=np.array([0, 1, 0], "<i4"))
        group.create_dataset("0.values", data=["north", "süd"], dtype=text)
        f.attrs["fastload"] = header.to_json().decode("utf-8")


def test_version_1_store_still_opens(tmp_path):
    payloads = [os.urandom(n) for n in (10, 3000, 7)]
    path = str(tmp_path / "v1.h5")
    _write_v1(path, payloads)
    with h5py.File(path, "r") as f:  # what makes it version 1: variable-length strings
        assert h5py.check_string_dtype(f["paths"].dtype).length is None
    store = fastload.open_store(path)
    assert store.header.format_version == 1
    assert store.paths == PATHS and store.labels.tolist() == [0, 1, 1]
    assert [store.read(i) for i in range(3)] == payloads
    assert store.metadata["site"].tolist() == SITES
    assert verify_store(store, progress=False) == []
    store.close()


def test_version_2_has_no_variable_length_strings(tmp_path):
    payloads = [os.urandom(n) for n in (10, 3000, 7)]
    path = str(tmp_path / "v2.h5")
    writer = Hdf5Writer(path, sum(map(len, payloads)))
    for payload in payloads:
        writer.append(payload)
    writer.finish(StoreHeader(3, "encoded", ["a", "b"], ["jpeg"], ["uint8"], 3), _table(payloads),
                  {"site": SITES})
    with open(path, "rb") as f:
        assert b"GCOL" not in f.read()  # no global heap collection anywhere in the file
    with h5py.File(path, "r") as f:
        header = json.loads(f.attrs["fastload"])
        assert header["format_version"] == 2 and f.attrs.get_id("fastload").dtype.kind == "S"
        assert f["paths"].dtype == np.uint8 and json.loads(f["paths"][()].tobytes()) == PATHS
        assert json.loads(f["metadata/0.values"][()].tobytes()) == sorted(set(SITES))
    store = fastload.open_store(path)
    assert store.paths == PATHS and [store.read(i) for i in range(3)] == payloads
    assert store.metadata["site"].tolist() == SITES
    store.close()


def test_version_2_paths_that_are_not_a_blob_are_damage(tmp_path):
    payloads = [b"x", b"yy", b"zzz"]
    path = str(tmp_path / "bad.h5")
    writer = Hdf5Writer(path, 6)
    for payload in payloads:
        writer.append(payload)
    writer.finish(StoreHeader(3, "encoded", ["a", "b"], ["jpeg"], ["uint8"], 3), _table(payloads))
    with h5py.File(path, "a") as f:
        blob = f["paths"][()]
        blob[0] = ord("{")  # no longer a JSON list
        f["paths"][...] = blob
    with pytest.raises(fastload.CorruptStoreError, match="source paths are not valid JSON"):
        fastload.open_store(path).paths  # noqa: B018
