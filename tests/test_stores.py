"""Reading stores (fastload.stores): format checks, bit depth, payload kinds, map growth, and
handles that survive fork and spawn."""

from __future__ import annotations

import json
import multiprocessing
import os

import numpy as np
import pytest
from imagefiles import dicom, jpeg, pixels, png16, write

import fastload
from fastload.inspect import verify_store
from fastload.stores.lmdb_store import HEADER_KEY, LmdbWriter, record_key

OPTIONS = dict(workers=1, progress=False)


def _pack(root, out, **kw):
    return fastload.pack(root, out, options=fastload.PackOptions(**{**OPTIONS, **kw}))


# --- stores that are not ours ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["random.bin", "random.lmdb", "random.h5"])
def test_random_file_is_not_a_store(tmp_path, name):
    path = write(str(tmp_path / name), os.urandom(4096))
    with pytest.raises(fastload.StoreFormatError, match="not"):
        fastload.open_store(path)


def test_image_folder_is_not_a_store(small_folder):
    with pytest.raises(fastload.StoreFormatError, match="pack it first"):
        fastload.open_store(small_folder)


def test_missing_store_and_empty_glob(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such store"):
        fastload.open_store(str(tmp_path / "nope.lmdb"))
    with pytest.raises(FileNotFoundError, match="no store matches"):
        fastload.open_store(str(tmp_path / "nope-*.lmdb"))


@pytest.mark.parametrize("subdir", [False, True])
def test_lmdb_without_our_header(tmp_path, subdir):
    import lmdb

    path = str(tmp_path / "other.lmdb")
    env = lmdb.open(path, subdir=subdir, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"some-key", b"some value")
    env.close()
    with pytest.raises(fastload.StoreFormatError, match="not a fastload store"):
        fastload.open_store(path)


def test_hdf5_without_our_datasets(tmp_path):
    import h5py

    path = str(tmp_path / "other.h5")
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(fastload.StoreFormatError, match="not a fastload store"):
        fastload.open_store(path)
    with h5py.File(path, "a") as f:
        f["data"], f["offsets"] = np.zeros(4, np.uint8), np.zeros(2, np.uint64)
    with pytest.raises(fastload.StoreFormatError, match="no fastload header"):
        fastload.open_store(path)


def _rewrite_header(path: str, change) -> None:
    if path.endswith(".h5"):
        import h5py

        with h5py.File(path, "a") as f:
            f.attrs["fastload"] = change(f.attrs["fastload"])
        return
    import lmdb

    env = lmdb.open(path, subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(HEADER_KEY, change(txn.get(HEADER_KEY).decode()).encode())
    env.close()


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_newer_format_version_is_refused(small_folder, tmp_path, fmt):
    path = str(tmp_path / ("s.lmdb" if fmt == "lmdb" else "s.h5"))
    _pack(small_folder, path, format=fmt)
    _rewrite_header(path, lambda raw: json.dumps({**json.loads(raw), "format_version": 99}))
    with pytest.raises(fastload.StoreFormatError, match="format version 99 is newer"):
        fastload.open_store(path)
    _rewrite_header(path, lambda raw: "{not json")
    with pytest.raises(fastload.CorruptStoreError, match="not valid JSON"):
        fastload.open_store(path)


def test_header_is_json_without_pickle(small_lmdb):
    store = fastload.open_store(small_lmdb)
    header = json.loads(store.header.to_json())
    assert header["magic"] == "fastload-store" and header["format_version"] == 1
    assert header["count"] == len(store) == 24 and header["checksum"] == "xxh3_64"
    assert header["classes"] == store.classes and header["payload"] == "encoded"


# --- corruption --------------------------------------------------------------------------------


def test_verify_names_a_deleted_lmdb_record(small_folder, tmp_path):
    import lmdb

    path = str(tmp_path / "s.lmdb")
    _pack(small_folder, path)
    env = lmdb.open(path, subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.delete(record_key(3))
    env.close()
    with pytest.raises(fastload.CorruptStoreError, match="holds 31 entries, the header describes 24 records"):
        fastload.open_store(path)  # the database disagrees with the header: refused at open
    store = fastload.open_store(path, strict=False)
    assert store.problems == ["the database holds 31 entries, the header describes 24 records and 8 "
                              "metadata entries"]
    bad = verify_store(store, progress=False)
    assert [(b.index, b.reason) for b in bad] == [(None, store.problems[0]), (3, "record is missing from the store")]
    assert bad[1].source.endswith(os.path.join("class_000", os.path.basename(bad[1].source)))
    assert store.read(4) and pytest.raises(fastload.CorruptRecordError, store.read, 3)


def test_verify_decode_catches_undecodable_payload_with_valid_checksum(small_folder, tmp_path):
    import lmdb

    from fastload.stores.format import ARRAY_DTYPES, checksum

    path = str(tmp_path / "s.lmdb")
    _pack(small_folder, path)
    junk = b"\xff\xd8\xff" + bytes(100)
    env = lmdb.open(path, subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(record_key(1), junk)
        sums = np.frombuffer(txn.get(b"~checksums"), ARRAY_DTYPES["checksums"][0]).copy()
        sums[1] = checksum(junk)
        txn.put(b"~checksums", sums.tobytes())
        sizes = np.frombuffer(txn.get(b"~nbytes"), ARRAY_DTYPES["nbytes"][0]).copy()
        sizes[1] = len(junk)
        txn.put(b"~nbytes", sizes.tobytes())
    env.close()
    store = fastload.open_store(path)
    assert verify_store(store, progress=False) == []
    [bad] = verify_store(store, decode=True, progress=False)
    assert bad.index == 1 and "does not decode" in bad.reason
    with pytest.raises(fastload.CorruptRecordError, match="record 1"):
        store.decode(1)


# --- payloads and bit depth --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
@pytest.mark.parametrize("payload", ["encoded", "raw"])
def test_16bit_pngs_round_trip_exactly(tmp_path, fmt, payload):
    gray = pixels(34, 30, 1, seed=1, dtype=np.uint16)
    rgb = pixels(30, 34, 3, seed=2, dtype=np.uint16)
    write(str(tmp_path / "d" / "x" / "a_gray.png"), png16(gray))
    write(str(tmp_path / "d" / "x" / "b_rgb.png"), png16(rgb))
    out = str(tmp_path / "s.store")
    _pack(str(tmp_path / "d"), out, format=fmt, payload=payload)
    store = fastload.open_store(out)
    assert store.decode(0).dtype == np.uint16 and np.array_equal(store.decode(0), gray[:, :, None])
    assert np.array_equal(store.decode(1), rgb)
    stored, label = store.get(1)
    assert label == 0
    if payload == "raw":
        assert isinstance(stored, np.ndarray) and np.array_equal(stored, rgb)
    else:
        assert stored == (tmp_path / "d" / "x" / "b_rgb.png").read_bytes()
    assert store.header.dtypes == ["uint16"]


@pytest.mark.parametrize("payload", ["encoded", "raw"])
def test_dicom_packs_at_its_depth(tmp_path, payload):
    pytest.importorskip("pydicom")
    values = pixels(26, 22, 1, seed=3, dtype=np.uint16) >> 4  # 12-bit values in uint16
    write(str(tmp_path / "d" / "scans" / "a.dcm"), dicom(values))
    write(str(tmp_path / "d" / "scans" / "b.jpg"), jpeg())
    out = str(tmp_path / "s.lmdb")
    _pack(str(tmp_path / "d"), out, payload=payload)
    store = fastload.open_store(out)
    image = store.decode(0)
    assert image.dtype == np.uint16 and np.array_equal(image[:, :, 0], values)
    assert values.max() > 255
    assert store.decode(1).dtype == np.uint8
    encodings = [store.header.encodings[int(c)] for c in store.table.encodings]
    assert encodings == (["raw", "raw"] if payload == "raw" else ["dicom", "jpeg"])


def test_max_side_reencodes_large_images(tmp_path):
    write(str(tmp_path / "d" / "x" / "big.jpg"), jpeg(height=96, width=80))
    write(str(tmp_path / "d" / "x" / "small.jpg"), jpeg(height=32, width=40))
    write(str(tmp_path / "d" / "x" / "wide16.png"), png16(pixels(40, 90, 1, dtype=np.uint16)))
    out = str(tmp_path / "s.lmdb")
    _pack(str(tmp_path / "d"), out, max_side=48)
    store = fastload.open_store(out)
    shapes = [store.decode(i).shape for i in range(3)]
    assert shapes == [(48, 40, 3), (32, 40, 3), (21, 48, 1)]
    assert [tuple(s) for s in store.table.shapes] == shapes
    assert store.read(1) == (tmp_path / "d" / "x" / "small.jpg").read_bytes()  # small: untouched
    assert store.decode(2).dtype == np.uint16


def test_lmdb_map_grows_as_needed(tmp_path):
    path = str(tmp_path / "grow.lmdb")
    writer = LmdbWriter(path, size_hint=0)  # starts at the 64 MiB minimum
    payloads = [os.urandom(1 << 20) for _ in range(4)]
    for i in range(80):  # 80 MiB of incompressible records
        writer.append(payloads[i % 4])
    from fastload.stores import RecordTable, StoreHeader
    from fastload.stores.format import checksum

    table = RecordTable.from_arrays({
        "labels": np.zeros(80),
        "checksums": np.array([checksum(payloads[i % 4]) for i in range(80)], dtype=np.uint64),
        "shapes": np.ones((80, 3)), "encodings": np.zeros(80), "dtypes": np.zeros(80),
        "nbytes": np.full(80, 1 << 20)}, [f"p{i}" for i in range(80)], 80, path)
    writer.finish(StoreHeader(80, "encoded", [], ["jpeg"], ["uint8"], 3), table)
    store = fastload.open_store(path)
    assert len(store) == 80 and store.read(79) == payloads[3]
    assert os.path.getsize(path) > 80 << 20


# --- fork and spawn ----------------------------------------------------------------------------


def read_labels_and_shapes(store, indices):
    return [(store.get(i)[1], store.decode(i).shape) for i in indices]


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("which", ["small_lmdb", "small_h5"])
def test_store_opened_in_parent_reads_in_children(request, method, which):
    store = fastload.open_store(request.getfixturevalue(which))
    expected = read_labels_and_shapes(store, range(len(store)))  # the parent's handle is open
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        parts = pool.starmap(read_labels_and_shapes, [(store, range(0, 12)), (store, range(12, 24))])
    assert parts[0] + parts[1] == expected
    assert read_labels_and_shapes(store, [0]) == expected[:1]  # parent still fine


class DecodedImages:
    """A minimal torch Dataset over a store (module level: spawn workers import it)."""

    def __init__(self, store):
        self.store = store

    def __len__(self):
        return len(self.store)

    def __getitem__(self, index):
        image = self.store.decode(index)
        return int(image.sum()), int(self.store.labels[index])


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_torch_dataloader_workers(small_h5, method):
    torch = pytest.importorskip("torch")
    store = fastload.open_store(small_h5)
    expected = [DecodedImages(store)[i] for i in range(len(store))]
    loader = torch.utils.data.DataLoader(DecodedImages(store), batch_size=5, num_workers=2,
                                         multiprocessing_context=method)
    got = [(int(s), int(label)) for sums, labels in loader for s, label in zip(sums, labels)]
    assert got == expected
