"""Per-record metadata columns (fastload.stores.metadata): typed round trips through LMDB,
HDF5 and shards, stores without columns, and the per-record builder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import fastload
from fastload.stores import FORMATS, MetadataBuilder, RecordTable, StoreHeader
from fastload.stores.format import checksum

EXT = {"lmdb": ".lmdb", "hdf5": ".h5"}


def _write(path: str, fmt: str, payloads: list[bytes], metadata=None, header_change=None) -> str:
    """A store written straight through a writer (no images needed to test metadata)."""
    n = len(payloads)
    writer = FORMATS[fmt].writer(path, sum(map(len, payloads)))
    for payload in payloads:
        writer.append(payload)
    table = RecordTable.from_arrays({
        "labels": np.arange(n) % 2, "checksums": np.array([checksum(p) for p in payloads], np.uint64),
        "shapes": np.ones((n, 3)), "encodings": np.zeros(n), "dtypes": np.zeros(n),
        "nbytes": np.array([len(p) for p in payloads])}, [f"f{i}.bin" for i in range(n)], n, path)
    header = StoreHeader(count=n, payload="encoded", classes=["a", "b"], encodings=["npy"],
                         dtypes=["uint8"], channels=1)
    writer.finish(header, table, metadata)
    return path


COLUMNS = {
    "patient_id": np.array(["P2", "P1", "P2", "é ü", ""]),
    "age": np.array([31, 40, 31, -2, 2**40], dtype=np.int64),
    "weight": np.array([1.5, np.nan, 3.0, -0.25, 1e300]),
    "score": np.array([0.5, 1, 2, 3, 4], dtype=np.float32),
    "flag": np.array([True, False, True, True, False]),
    "site": ["A", "B", "A", "A", "B"],  # a plain list of strings
    "count8": np.array([1, 2, 3, 4, 255], dtype=np.uint8),
}


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_columns_round_trip_typed(tmp_path, fmt):
    path = _write(str(tmp_path / f"s{EXT[fmt]}"), fmt, [bytes([i]) * 10 for i in range(5)], COLUMNS)
    store = fastload.open_store(path)
    meta = store.metadata
    assert list(meta) == list(COLUMNS)  # written order
    assert [(c.name, c.kind, c.dtype) for c in store.metadata_columns] == [
        ("patient_id", "string", "<i4"), ("age", "int", "<i8"), ("weight", "float", "<f8"),
        ("score", "float", "<f4"), ("flag", "bool", "|b1"), ("site", "string", "<i4"),
        ("count8", "int", "<i8")]
    assert meta["patient_id"].dtype.kind == "U" and meta["patient_id"].tolist() == ["P2", "P1", "P2", "é ü", ""]
    assert meta["age"].dtype == np.int64 and meta["age"].tolist() == COLUMNS["age"].tolist()
    np.testing.assert_array_equal(meta["weight"], COLUMNS["weight"])  # NaN stays NaN
    assert meta["score"].dtype == np.float32 and meta["flag"].dtype == np.bool_
    assert meta["site"].tolist() == COLUMNS["site"] and meta["count8"].tolist() == [1, 2, 3, 4, 255]
    with pytest.raises(ValueError):
        meta["age"][0] = 7  # shared arrays are read-only
    assert store.get(3)[1] == 1  # records read as before
    header = json.loads(store.header.to_json())
    # HDF5 stores are format version 2 (strings as JSON blobs); LMDB's layout is still version 1
    assert header["format_version"] == {"lmdb": 1, "hdf5": 2}[fmt] and len(header["metadata_columns"]) == len(COLUMNS)
    store.close()


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_store_without_columns_and_an_old_header_read_as_none(tmp_path, fmt):
    path = _write(str(tmp_path / f"s{EXT[fmt]}"), fmt, [b"abc", b"de"])
    _rewrite_header(path, lambda h: {k: v for k, v in h.items() if k != "metadata_columns"})
    store = fastload.open_store(path)
    assert store.metadata == {} and store.metadata_columns == ()
    assert store.get(0) == (b"abc", 0)
    store.close()


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_unknown_column_kind_is_refused_at_open(tmp_path, fmt):
    path = _write(str(tmp_path / f"s{EXT[fmt]}"), fmt, [b"abc"], {"x": [1]})

    def newer(header):
        header["metadata_columns"][0]["kind"] = "timestamp"
        return header

    _rewrite_header(path, newer)
    with pytest.raises(fastload.StoreFormatError, match="'x' has kind 'timestamp'.*pip install -U"):
        fastload.open_store(path)


def test_shards_concatenate_and_must_agree(tmp_path):
    a = _write(str(tmp_path / "a.lmdb"), "lmdb", [b"1", b"2"], {"pid": ["x", "y"], "n": [1, 2]})
    b = _write(str(tmp_path / "b.h5"), "hdf5", [b"3"], {"pid": ["z"], "n": [3]})
    store = fastload.open_store([a, b])
    assert store.metadata["pid"].tolist() == ["x", "y", "z"] and store.metadata["n"].tolist() == [1, 2, 3]
    assert [c.name for c in store.metadata_columns] == ["pid", "n"]
    store.close()
    c = _write(str(tmp_path / "c.lmdb"), "lmdb", [b"3"], {"pid": [7], "n": [3]})  # pid: int here
    with pytest.raises(fastload.StoreFormatError, match="metadata columns .* differ"):
        fastload.open_store([a, c])


def test_writer_checks_columns(tmp_path):
    with pytest.raises(ValueError, match="has 1 values for 2 records"):
        _write(str(tmp_path / "a.lmdb"), "lmdb", [b"1", b"2"], {"pid": ["x"]})
    with pytest.raises(ValueError, match="dtype complex"):
        _write(str(tmp_path / "b.lmdb"), "lmdb", [b"1"], {"z": np.array([1j])})
    with pytest.raises(ValueError, match="non-empty string name"):
        _write(str(tmp_path / "c.lmdb"), "lmdb", [b"1"], {"": [1]})


def test_builder_types_columns_per_record():
    builder = MetadataBuilder(kinds={"thickness": "float"})
    builder.append({"pid": "P1", "n": 3, "x": 1, "ok": True, "thickness": 1})
    builder.append({"pid": "P2", "n": np.int16(4), "x": 2.5, "ok": np.bool_(False)})
    builder.append({"n": 5, "x": None, "ok": True, "late": 10**30})
    columns = builder.columns()
    assert len(builder) == 3 and list(columns) == ["thickness", "pid", "n", "x", "ok", "late"]
    assert columns["pid"].tolist() == ["P1", "P2", ""]
    assert columns["n"].dtype == np.int64 and columns["n"].tolist() == [3, 4, 5]
    assert columns["x"].dtype == np.float64 and math.isnan(columns["x"][2])
    assert columns["ok"].dtype == np.bool_ and columns["thickness"].tolist()[0] == 1.0
    assert columns["late"].tolist() == ["", "", str(10**30)]  # wider than int64: text
    strict = MetadataBuilder(kinds={"n": "int"})
    strict.append({"n": 1})
    strict.append({})
    with pytest.raises(ValueError, match="'n' .*no value for record 1"):
        strict.columns()
    with pytest.raises(ValueError, match="kind must be one of"):
        MetadataBuilder(kinds={"n": "decimal"})


def _rewrite_header(path: str, change) -> None:
    if path.endswith(".h5"):
        import h5py

        with h5py.File(path, "a") as f:
            f.attrs["fastload"] = json.dumps(change(json.loads(f.attrs["fastload"])))
        return
    import lmdb

    env = lmdb.open(path, subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"~header", json.dumps(change(json.loads(txn.get(b"~header")))).encode())
    env.close()
