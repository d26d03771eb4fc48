"""Listing what to pack: ImageFolder trees and CSV manifests (fastload.sources)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from imagefiles import jpeg, write

import fastload
from fastload.inspect import inspect_store
from fastload.sources import CsvColumns, scan_csv, scan_folder


def _names(source) -> list[str]:
    return [os.path.relpath(item.path, source.root) for item in source.items]


def _reasons(source) -> dict[str, str]:
    return {os.path.relpath(s.path, source.root): s.reason for s in source.skipped}


# --- folders ---------------------------------------------------------------------------------


def test_imagefolder_nested_sorted_labels(tmp_path):
    for rel in ["b/x2.jpg", "b/x1.jpg", "a/deep/er/z.jpg", "a/y.jpg", "c/.hidden.jpg", "c/w.jpg"]:
        write(str(tmp_path / rel), jpeg())
    source = scan_folder(str(tmp_path))
    assert source.classes == ["a", "b", "c"]
    assert _names(source) == ["a/deep/er/z.jpg", "a/y.jpg", "b/x1.jpg", "b/x2.jpg", "c/w.jpg"]
    assert [i.label for i in source.items] == [0, 0, 1, 1, 2]
    assert not source.skipped


def test_flat_folder_is_unlabelled(tmp_path):
    write(str(tmp_path / "1.jpg"), jpeg())
    write(str(tmp_path / "2.png"), jpeg())
    source = scan_folder(str(tmp_path))
    assert source.classes == [] and [i.label for i in source.items] == [-1, -1]


def test_files_beside_class_folders_are_reported(tmp_path):
    write(str(tmp_path / "cls" / "a.jpg"), jpeg())
    write(str(tmp_path / "stray.jpg"), jpeg())
    source = scan_folder(str(tmp_path))
    assert _names(source) == ["cls/a.jpg"]
    assert "outside any class folder" in _reasons(source)["stray.jpg"]


def test_odd_names_spaces_unicode_and_non_utf8_bytes(tmp_path):
    root = os.fsencode(str(tmp_path))
    for name in [b"with space.jpg", "caf\u00e9 \u732b.jpg".encode(), b"caf\xe9.jpg"]:
        write(os.path.join(root, b"cls", name), jpeg())
    source = scan_folder(str(tmp_path))
    assert len(source.items) == 3 and not source.skipped
    for item in source.items:
        assert os.path.isfile(item.path)  # str paths with surrogates open the same bytes
    names = [os.path.basename(os.fsencode(i.path)) for i in source.items]
    assert names == [b"caf\xc3\xa9 \xe7\x8c\xab.jpg", b"caf\xe9.jpg", b"with space.jpg"]  # byte order


def test_dangling_and_looping_symlinks_are_reported(tmp_path):
    cls = tmp_path / "cls"
    write(str(cls / "good.jpg"), jpeg())
    os.symlink(str(tmp_path / "nowhere.jpg"), cls / "dangling.jpg")
    os.symlink("self.jpg", cls / "self.jpg")  # a link to itself: ELOOP
    os.symlink(str(cls), cls / "loop")  # a folder link back to its parent
    os.symlink(str(cls / "good.jpg"), cls / "alias.jpg")  # a good link: packed
    source = scan_folder(str(tmp_path))
    assert _names(source) == ["cls/alias.jpg", "cls/good.jpg"]
    reasons = _reasons(source)
    assert "dangling symlink" in reasons["cls/dangling.jpg"]
    assert "symlink" in reasons["cls/self.jpg"] or "levels" in reasons["cls/self.jpg"]
    assert "loop" in reasons["cls/loop"]


def test_directory_named_like_an_image_is_a_folder(tmp_path):
    write(str(tmp_path / "cls" / "x.jpg" / "inner.jpg"), jpeg())
    os.makedirs(tmp_path / "cls" / "empty.png")
    source = scan_folder(str(tmp_path))
    assert _names(source) == ["cls/x.jpg/inner.jpg"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        scan_folder(str(tmp_path / "nope"))


# --- CSV manifests ---------------------------------------------------------------------------


def _csv(tmp_path, text: str, files=("a.jpg", "b.jpg", "c.jpg")) -> str:
    for name in files:
        write(str(tmp_path / "img" / name), jpeg())
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_csv_string_labels_become_sorted_class_indices(tmp_path):
    csv = _csv(tmp_path, "filename,label\na.jpg,dog\nb.jpg,cat\nc.jpg,dog\n")
    source = scan_csv(csv, str(tmp_path / "img"))
    assert source.classes == ["cat", "dog"]
    assert _names(source) == ["a.jpg", "b.jpg", "c.jpg"]  # row order, not sorted
    assert [i.label for i in source.items] == [1, 0, 1]


def test_csv_integer_labels_are_kept(tmp_path):
    csv = _csv(tmp_path, "image_id,target\na.jpg,3\nb.jpg,0\nc.jpg,3\n")
    source = scan_csv(csv, str(tmp_path / "img"))
    assert [i.label for i in source.items] == [3, 0, 3]
    assert source.classes == ["0", "1", "2", "3"]


def test_csv_kaggle_ids_without_extension(tmp_path):
    csv = _csv(tmp_path, "id,label\n0a1b,1\n0a1c,0\n", files=("0a1b.jpg", "0a1c.png"))
    source = scan_csv(csv, str(tmp_path / "img"))
    assert _names(source) == ["0a1b.jpg", "0a1c.png"]


def test_csv_header_detection_and_override(tmp_path):
    csv = _csv(tmp_path, "Label;File\ncat;a.jpg\ndog;b.jpg\n")  # other order, other delimiter
    source = scan_csv(csv, str(tmp_path / "img"))
    assert _names(source) == ["a.jpg", "b.jpg"] and source.classes == ["cat", "dog"]
    csv = _csv(tmp_path, "picture,kind,extra\na.jpg,x,1\nb.jpg,y,2\n")
    with pytest.raises(ValueError, match="path-column"):
        scan_csv(csv, str(tmp_path / "img"))
    source = scan_csv(csv, str(tmp_path / "img"), CsvColumns(path="picture", label="kind"))
    assert source.classes == ["x", "y"]
    with pytest.raises(ValueError, match="no column named 'nope'"):
        scan_csv(csv, str(tmp_path / "img"), CsvColumns(path="nope"))


def test_csv_without_header_row(tmp_path):
    csv = _csv(tmp_path, "a.jpg,cat\nb.jpg,dog\n")
    source = scan_csv(csv, str(tmp_path / "img"))
    assert _names(source) == ["a.jpg", "b.jpg"] and [i.label for i in source.items] == [0, 1]


def test_csv_unlabelled_column_missing_or_cells_empty(tmp_path):
    csv = _csv(tmp_path, "path\na.jpg\nb.jpg\n")
    source = scan_csv(csv, str(tmp_path / "img"))
    assert [i.label for i in source.items] == [-1, -1] and source.classes == []
    csv = _csv(tmp_path, "path,label\na.jpg,cat\nb.jpg,\nc.jpg,dog\n")
    source = scan_csv(csv, str(tmp_path / "img"))
    assert [i.label for i in source.items] == [0, -1, 1] and source.classes == ["cat", "dog"]


def test_csv_duplicates_missing_files_and_folders(tmp_path):
    os.makedirs(tmp_path / "img" / "sub.jpg")
    csv = _csv(tmp_path, "path,label\n"
                         "a.jpg,cat\n"      # row 2
                         "./a.jpg,cat\n"    # row 3: same file, same label: repeat
                         "b.jpg,cat\n"      # row 4
                         "b.jpg,dog\n"      # row 5: conflict: b.jpg dropped everywhere
                         "gone.jpg,cat\n"   # row 6: missing
                         "sub.jpg,dog\n"    # row 7: a folder
                         "c.jpg,dog\n")
    source = scan_csv(csv, str(tmp_path / "img"))
    assert _names(source) == ["a.jpg", "c.jpg"]
    reasons = [s.reason for s in source.skipped]
    assert any("repeats row 2" in r for r in reasons)
    assert any("rows 4 and 5 give different labels" in r for r in reasons)
    assert any("row 6 names a file that does not exist" in r for r in reasons)
    assert any("row 7 names a folder" in r for r in reasons)


def test_csv_negative_integer_labels_refused(tmp_path):
    csv = _csv(tmp_path, "path,label\na.jpg,-3\n")
    with pytest.raises(ValueError, match=">= 0"):
        scan_csv(csv, str(tmp_path / "img"))


# --- CSV metadata columns --------------------------------------------------------------------


def test_csv_extra_columns_become_typed_metadata(tmp_path):
    csv = _csv(tmp_path, "patient_id,filename,age,weight,site,zip,note,label,\n"
                         "7,a.jpg,31,1.5,A,02139,x,cat,p\n"
                         "8,b.jpg,40,,B,10001,,dog\n"    # ragged: the last column's cell is missing
                         "7,c.jpg,55,2e1,A,94103,z z,cat,q\n")
    meta = scan_csv(csv, str(tmp_path / "img")).metadata
    assert list(meta) == ["patient_id", "age", "weight", "site", "zip", "note", "column 9"]
    assert meta["patient_id"].dtype == np.int64 and meta["patient_id"].tolist() == [7, 8, 7]
    assert meta["age"].tolist() == [31, 40, 55]
    assert meta["weight"].dtype == np.float64 and np.isnan(meta["weight"][1])
    assert meta["weight"][[0, 2]].tolist() == [1.5, 20.0]
    assert meta["site"].tolist() == ["A", "B", "A"]
    assert meta["zip"].tolist() == ["02139", "10001", "94103"]  # a leading zero: kept as text
    assert meta["note"].tolist() == ["x", "", "z z"] and meta["column 9"].tolist() == ["p", "", "q"]


def test_csv_metadata_follows_kept_rows_and_names_stay_unique(tmp_path):
    csv = _csv(tmp_path, "path,label,pid,pid\n"
                         "a.jpg,cat,P1,1\n"
                         "gone.jpg,cat,P9,9\n"   # missing file: skipped, no value kept
                         "./a.jpg,cat,P1b,1\n"   # repeat: the first row's values are kept
                         "b.jpg,cat,P2,2\nb.jpg,dog,P2,2\n"  # conflict: dropped
                         "c.jpg,dog,P3,\n")
    source = scan_csv(csv, str(tmp_path / "img"))
    assert _names(source) == ["a.jpg", "c.jpg"]
    assert source.metadata["pid"].tolist() == ["P1", "P3"]
    assert source.metadata["pid.1"].tolist()[0] == 1.0 and np.isnan(source.metadata["pid.1"][1])
    assert [len(s.metadata["pid"]) for s in (source.split(2, 0), source.split(2, 1))] == [1, 1]


def test_csv_without_header_keeps_extra_columns(tmp_path):
    csv = _csv(tmp_path, "a.jpg,cat,3\nb.jpg,dog,4\n")
    assert scan_csv(csv, str(tmp_path / "img")).metadata == {"column 3": pytest.approx([3, 4])}


@pytest.mark.parametrize("fmt,shard_size", [("lmdb", None), ("hdf5", 3)])
def test_pack_keeps_csv_metadata_aligned_past_skipped_rows(tmp_path, fmt, shard_size):
    names = [f"{i}.jpg" for i in range(7)]
    for i, name in enumerate(names):
        write(str(tmp_path / "img" / name), jpeg(seed=i) if i != 2 else b"not an image")
    rows = [f"{name},{i % 2},P{i // 2},{i * 10}" for i, name in enumerate(names)]
    rows.insert(4, "missing.jpg,0,PX,999")
    (tmp_path / "train.csv").write_text("path,label,patient,score\n" + "\n".join(rows) + "\n")
    out = str(tmp_path / ("s.lmdb" if fmt == "lmdb" else "s.h5"))
    fastload.pack(str(tmp_path / "img"), out, labels=str(tmp_path / "train.csv"), options=fastload.PackOptions(
        format=fmt, workers=2, progress=False, shard_size=shard_size))
    store = fastload.open_store(out if shard_size is None else out.replace(".h5", "-*.h5"))
    kept = [int(os.path.basename(p).split(".")[0]) for p in store.paths]
    assert kept == [0, 1, 3, 4, 5, 6]  # 2.jpg fails to decode, missing.jpg is not there
    assert store.metadata["patient"].tolist() == [f"P{i // 2}" for i in kept]
    assert store.metadata["score"].tolist() == [i * 10 for i in kept]
    assert store.labels.tolist() == [i % 2 for i in kept]
    profile = inspect_store(store)
    assert {c["name"]: c["kind"] for c in profile["metadata"]} == {"patient": "string", "score": "int"}
    store.close()
