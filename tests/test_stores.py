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


# --- reading without LMDB and without h5py ------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> str:
    """Records of 0.3-12 KB: on LMDB's leaf pages and on overflow pages; one spans HDF5 chunks."""
    root = tmp_path_factory.mktemp("mixed") / "data"
    for i, side in enumerate([8, 16, 24, 40, 64, 96, 12, 80]):
        write(str(root / "x" / f"im{i}.png"), png16(pixels(side, side + 3, 1, seed=i, dtype=np.uint16)))
    return str(root)


def test_lmdb_reader_reads_what_lmdb_reads(mixed_folder, tmp_path):
    import lmdb

    path = str(tmp_path / "s.lmdb")
    _pack(mixed_folder, path)
    store = fastload.open_store(path)
    file = store._live_handle().file
    env = lmdb.open(path, subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        items = list(txn.cursor())
    assert len(items) == len(store) + 8 and all(file.get(bytes(k)) == bytes(v) for k, v in items)
    assert [store.read(i) for i in range(len(store))] == [bytes(v) for _, v in items[: len(store)]]
    assert file.walk(len(store)) == ([], {})
    os.makedirs(tmp_path / "env")  # an LMDB environment folder is read the same
    os.rename(path, tmp_path / "env" / "data.mdb")
    assert fastload.open_store(str(tmp_path / "env")).read(7) == bytes(items[7][1])


def test_lmdb_file_short_by_free_pages_only_is_whole(tmp_path):
    import lmdb

    from fastload.stores.lmdb_pages import LmdbFile

    path = str(tmp_path / "free.lmdb")
    env = lmdb.open(path, subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"big", os.urandom(100_000))
    with env.begin(write=True) as txn:
        txn.delete(b"big")
    for i in range(3):  # rewrite the trees' pages from the free list: the last pages become free
        with env.begin(write=True) as txn:
            txn.put(b"k%d" % i, b"v")
    env.close()
    probe = LmdbFile(path, path)
    free, last = probe._free_pages(), probe.meta.last_pg
    probe.close()
    first_free = min(p for p in range(last + 1) if all(q in free for q in range(p, last + 1)))
    assert first_free <= last  # the file ends with free pages
    os.truncate(path, first_free * 4096)
    LmdbFile(path, path).close()  # not truncated: only free pages are missing
    os.truncate(path, first_free * 4096 - 1)
    with pytest.raises(fastload.CorruptStoreError, match=f"truncated: {first_free * 4096 - 1:,} of"):
        LmdbFile(path, path)


def _copy_hdf5(src: str, dst: str, **data_options) -> None:
    import h5py

    with h5py.File(src, "r") as a, h5py.File(dst, "w", libver="latest") as b:
        for name in a:
            if name == "data":
                b.create_dataset("data", data=a["data"][()], **data_options)
            else:
                a.copy(name, b)
        b.attrs["fastload"] = a.attrs["fastload"]


@pytest.mark.parametrize("layout", ["as packed", "contiguous", "gzip"])
def test_hdf5_records_read_around_h5py_match_h5py(mixed_folder, tmp_path, layout):
    import h5py

    path = str(tmp_path / "s.h5")
    _pack(mixed_folder, path, format="hdf5")
    if layout != "as packed":  # other layouts of `data`: contiguous (read directly), compressed (by h5py)
        _copy_hdf5(path, str(tmp_path / "c.h5"), **({"compression": "gzip", "chunks": (4096,)}
                                                    if layout == "gzip" else {}))
        path = str(tmp_path / "c.h5")
    store = fastload.open_store(path)
    handle = store._live_handle()
    assert handle.direct == (layout != "gzip")
    with h5py.File(path, "r") as f:
        offsets, data = f["offsets"][()], f["data"][()]
        assert store.paths == json.loads(f["paths"][()].tobytes())  # format version 2: a JSON blob
        assert json.loads(store.header.to_json())["count"] == json.loads(f.attrs["fastload"])["count"]
    assert [store.read(i) for i in range(len(store))] == [
        data[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(store))]
    assert verify_store(store, progress=False) == []


def test_hdf5_record_spanning_chunks(tmp_path):
    from fastload.stores import RecordTable, StoreHeader
    from fastload.stores.format import checksum
    from fastload.stores.hdf5_store import _CHUNK, Hdf5Writer

    payloads = [os.urandom(n) for n in (100, _CHUNK + 5000, 3 * _CHUNK, 7)]
    path = str(tmp_path / "span.h5")
    writer = Hdf5Writer(path, 0)
    for payload in payloads:
        writer.append(payload)
    n = len(payloads)
    table = RecordTable.from_arrays({
        "labels": np.zeros(n), "checksums": np.array([checksum(p) for p in payloads], np.uint64),
        "shapes": np.ones((n, 3)), "encodings": np.zeros(n), "dtypes": np.zeros(n),
        "nbytes": np.array([len(p) for p in payloads])}, [f"p{i}" for i in range(n)], n, path)
    writer.finish(StoreHeader(n, "encoded", [], ["jpeg"], ["uint8"], 3), table)
    store = fastload.open_store(path)
    assert [store.read(i) for i in range(n)] == payloads


def test_open_store_strict_and_lenient(small_folder, tmp_path):
    path = str(tmp_path / "s.lmdb")
    _pack(small_folder, path)
    size = os.path.getsize(path)
    os.truncate(path, size - 8192)
    with pytest.raises(fastload.CorruptStoreError, match=f"truncated: {size - 8192:,} of {size:,} bytes; "
                                                         "re-copy the store"):
        fastload.open_store(path)
    with pytest.raises(fastload.FastloadError, match="s.lmdb"):  # the metadata lay in the lost pages
        fastload.open_store(path, strict=False)


def test_damaged_record_table_is_the_stores_error_not_a_records(small_folder, tmp_path):
    import lmdb

    path = str(tmp_path / "s.lmdb")
    _pack(small_folder, path)
    env = lmdb.open(path, subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"~nbytes", b"\x00" * 16)
    env.close()
    store = fastload.open_store(path)
    with pytest.raises(fastload.CorruptStoreError, match="'nbytes' has 16 bytes") as caught:
        store.read(0)
    assert not isinstance(caught.value, fastload.CorruptRecordError)
    [bad] = verify_store(fastload.open_store(path, strict=False), progress=False)
    assert bad.index is None and "'nbytes' has 16 bytes" in str(bad)


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
    # A DICOM record holds the DICOM policy's pixels, losslessly (16-bit PNG), not the file.
    assert encodings == (["raw", "raw"] if payload == "raw" else ["png", "jpeg"])


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


@pytest.mark.parametrize("fixture", ["small_lmdb", "small_h5"])
def test_read_into_gives_read_s_bytes_and_checks(fixture, request, tmp_path):
    store = fastload.open_store(request.getfixturevalue(fixture))
    out = bytearray(1 << 20)
    for index in range(len(store)):
        size = store.read_into(index, memoryview(out))
        assert bytes(out[:size]) == store.read(index)
