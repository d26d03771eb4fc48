"""DESIGN.md section 4, case by case: every bad input gets a clear message, and nothing that was
good is lost (every good image beside it is packed). ``--strict`` fails instead of skipping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from imagefiles import (
    encode,
    good_folder,
    jpeg,
    pixels,
    png,
    png16,
    png_claiming,
    with_exif_orientation,
    write,
)
from PIL import Image

import fastload

OPTIONS = fastload.PackOptions(workers=1, progress=False)


def _pack(root, out, **kw):
    options = fastload.PackOptions(**{"workers": 1, "progress": False, **kw})
    return fastload.pack(root, out, options=options)


def _truncated(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


# name in class folder "cat" -> (bytes, regex the reason must match)
BAD_FILES = {
    "zero_bytes.jpg": (b"", "empty file"),
    "truncated.jpg": (_truncated(jpeg(seed=1, height=64, width=80), 0.6), "truncated or corrupt"),
    "truncated_end.jpg": (jpeg(seed=2)[:-2], "truncated or corrupt"),
    "truncated.png": (_truncated(png(seed=3), 0.7), "truncated or corrupt"),
    "notes.jpg": (b"these are my notes, not a photo\n" * 4, "plain text"),
    "page.jpg": (b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n", "HTML"),
    "bomb.png": (png_claiming(50000, 50000), r"50000x50000|2500000000 pixels"),
    "garbage.jpg": (bytes(range(7, 250)) * 3, "not a recognised image format"),
    "fake_header.jpg": (b"\xff\xd8\xff\xe0" + bytes(200), "jpeg|truncated or corrupt"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_skipped_and_good_ones_packed(tmp_path, name):
    data, reason = BAD_FILES[name]
    root = str(tmp_path / "data")
    good = good_folder(root)
    bad = write(os.path.join(root, "cat", name), data)
    out = str(tmp_path / "out.lmdb")
    summary = _pack(root, out)
    store = fastload.open_store(out)
    assert store.paths == good  # nothing good lost, record order unchanged
    assert summary.packed == len(good) and [s.path for s in summary.skipped] == [bad]
    [entry] = store.header.skipped
    assert entry["path"] == bad and __import__("re").search(reason, entry["reason"])
    with open(out + ".report.json", encoding="utf-8") as f:
        report = json.load(f)
    assert report["packed"] == len(good) and report["skipped"] == [entry]
    assert name in str(summary)  # the printed summary lists it


@pytest.mark.parametrize("name", ["zero_bytes.jpg", "truncated.png", "bomb.png"])
def test_strict_fails_naming_the_input_and_writes_nothing(tmp_path, name):
    data, reason = BAD_FILES[name]
    root = str(tmp_path / "data")
    good_folder(root)
    write(os.path.join(root, "cat", name), data)
    out = str(tmp_path / "out.h5")
    with pytest.raises(fastload.PackError, match=name) as info:
        _pack(root, out, format="hdf5", strict=True)
    assert "strict" in str(info.value)
    assert os.listdir(tmp_path) == ["data"]  # no store, no partial file, no report


def test_all_bad_inputs_at_once_with_two_workers(tmp_path):
    root = str(tmp_path / "data")
    good = good_folder(root, per_class=20)
    for name, (data, _) in BAD_FILES.items():
        write(os.path.join(root, "dog", name), data)
    out = str(tmp_path / "out.h5")
    summary = _pack(root, out, format="hdf5", workers=2)
    store = fastload.open_store(out)
    assert store.paths == good and summary.packed == len(good)
    assert sorted(os.path.basename(s["path"]) for s in store.header.skipped) == sorted(BAD_FILES)


def test_png_named_jpg_is_packed_by_content(tmp_path):
    root = str(tmp_path / "data")
    good = good_folder(root)
    rgb = pixels(30, 30, 3, seed=5)
    path = write(os.path.join(root, "cat", "really_a_png.jpg"), encode(rgb, "PNG"))
    store_path = str(tmp_path / "s.lmdb")
    _pack(root, store_path)
    store = fastload.open_store(store_path)
    assert store.paths == sorted([*good, path])
    index = store.paths.index(path)
    assert np.array_equal(store.decode(index), rgb)
    assert store.header.encodings[int(store.table.encodings[index])] == "png"


def test_colour_modes_and_depths_follow_the_policy(tmp_path):
    root = str(tmp_path / "data")
    rgb, gray = pixels(30, 40, 3, seed=6), pixels(30, 40, 1, seed=7)
    gray16, rgb16 = pixels(30, 40, 1, seed=8, dtype=np.uint16), pixels(30, 40, 3, seed=9, dtype=np.uint16)
    files = {  # name -> (bytes, expected channels, dtype, exact pixels or None)
        "cmyk.jpg": (encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), 3, np.uint8, None),
        "palette.png": (encode(Image.fromarray(rgb).convert("P"), "PNG"), 3, np.uint8, None),
        "rgba.png": (encode(np.dstack([rgb, gray]), "PNG"), 3, np.uint8, rgb),
        "gray.png": (encode(gray, "PNG"), 1, np.uint8, gray[:, :, None]),
        "gray_alpha.png": (encode(Image.fromarray(gray).convert("LA"), "PNG"), 1, np.uint8, gray[:, :, None]),
        "gray16.png": (png16(gray16), 1, np.uint16, gray16[:, :, None]),
        "rgb16.png": (png16(rgb16), 3, np.uint16, rgb16),
    }
    for name, (data, *_) in files.items():
        write(os.path.join(root, "x", name), data)
    for payload in ("encoded", "raw"):
        out = str(tmp_path / f"{payload}.lmdb")
        _pack(root, out, payload=payload)
        store = fastload.open_store(out)
        assert len(store) == len(files) and not store.header.skipped
        for i, path in enumerate(store.paths):
            _, channels, dtype, exact = files[os.path.basename(path)]
            image = store.decode(i)
            assert image.shape == (30, 40, channels) and image.dtype == dtype, path
            assert tuple(store.table.shapes[i]) == image.shape
            if exact is not None:
                assert np.array_equal(image, exact), path
        assert store.channels == 3


def test_exif_orientation_applied_when_packed(tmp_path):
    root = str(tmp_path / "data")
    rgb = pixels(30, 50, 3, seed=10)
    write(os.path.join(root, "x", "rotated.png"), with_exif_orientation(rgb, 6))
    out = str(tmp_path / "s.h5")
    _pack(root, out, format="hdf5")
    store = fastload.open_store(out)
    assert np.array_equal(store.decode(0), np.rot90(rgb, -1))
    assert tuple(store.table.shapes[0]) == (50, 30, 3)


def test_odd_names_are_packed_and_reported_safely(tmp_path):
    root = os.fsencode(str(tmp_path / "data"))
    for name in [b"with space.jpg", "caf\u00e9 \u732b.jpg".encode(), b"caf\xe9.jpg"]:
        write(os.path.join(root, b"cls", name), jpeg())
    write(os.path.join(root, b"cls", b"bad \xff name.jpg"), b"")
    out = str(tmp_path / "s.lmdb")
    summary = _pack(os.fsdecode(root), out)
    store = fastload.open_store(out)
    assert len(store) == 3
    assert sorted(os.path.basename(p) for p in store.paths) == sorted(
        ["with space.jpg", "caf\u00e9 \u732b.jpg", "caf\\xe9.jpg"])  # undecodable bytes escaped
    [entry] = store.header.skipped
    assert entry["path"].endswith("bad \\xff name.jpg") and "empty" in entry["reason"]
    with open(out + ".report.json", encoding="utf-8") as f:
        assert json.load(f)["skipped"] == [entry]
    assert "bad \\xff name.jpg" in str(summary)


def test_symlinks_dangling_and_looping_are_skipped(tmp_path):
    root = tmp_path / "data"
    good = good_folder(str(root))
    os.symlink(str(tmp_path / "missing.jpg"), root / "cat" / "dangling.jpg")
    os.symlink("loop.jpg", root / "cat" / "loop.jpg")
    os.symlink(str(root / "cat"), root / "cat" / "again")
    out = str(tmp_path / "s.lmdb")
    _pack(str(root), out)
    store = fastload.open_store(out)
    assert store.paths == good
    reasons = {os.path.basename(s["path"]): s["reason"] for s in store.header.skipped}
    assert set(reasons) == {"dangling.jpg", "loop.jpg", "again"}
    assert "dangling symlink" in reasons["dangling.jpg"] and "loop" in reasons["again"]
    with pytest.raises(fastload.PackError, match="dangling"):
        _pack(str(root), str(tmp_path / "strict.lmdb"), strict=True)
    assert not os.path.exists(tmp_path / "strict.lmdb")


def test_directory_named_like_an_image(tmp_path):
    root = tmp_path / "data"
    good = good_folder(str(root))
    os.makedirs(root / "cat" / "x.jpg")
    out = str(tmp_path / "s.lmdb")
    _pack(str(root), out)
    assert fastload.open_store(out).paths == good
    (tmp_path / "m.csv").write_text("path,label\ncat/x.jpg,cat\ncat/good_00.jpg,cat\n")
    summary = fastload.pack(str(root), str(tmp_path / "c.lmdb"), labels=str(tmp_path / "m.csv"),
                            options=OPTIONS)
    assert summary.packed == 1 and "names a folder" in summary.skipped[0].reason


def test_csv_duplicates_and_missing_rows_reported(tmp_path):
    root = tmp_path / "data"
    good_folder(str(root))
    (tmp_path / "m.csv").write_text(
        "path,label\ncat/good_00.jpg,cat\ncat/good_00.jpg,cat\ncat/good_01.jpg,cat\n"
        "cat/good_01.jpg,dog\ncat/missing.jpg,dog\ndog/good_00.jpg,dog\n")
    out = str(tmp_path / "s.lmdb")
    summary = fastload.pack(str(root), out, labels=str(tmp_path / "m.csv"), options=OPTIONS)
    store = fastload.open_store(out)
    assert [os.path.relpath(p, root) for p in store.paths] == ["cat/good_00.jpg", "dog/good_00.jpg"]
    assert store.classes == ["cat", "dog"] and store.labels.tolist() == [0, 1]
    reasons = " | ".join(s.reason for s in summary.skipped)
    assert "repeats row 2" in reasons and "different labels" in reasons and "does not exist" in reasons
    with pytest.raises(fastload.PackError, match="strict"):
        fastload.pack(str(root), str(tmp_path / "t.lmdb"), labels=str(tmp_path / "m.csv"),
                      options=fastload.PackOptions(workers=1, progress=False, strict=True))


def test_nothing_packable_is_a_clear_error(tmp_path):
    root = tmp_path / "data"
    write(str(root / "cat" / "a.jpg"), b"")
    write(str(root / "cat" / "b.jpg"), b"<html></html>")
    with pytest.raises(fastload.PackError, match="no image could be packed"):
        _pack(str(root), str(tmp_path / "s.lmdb"))
    assert sorted(os.listdir(tmp_path)) == ["data"]


# --- disk full, killed pack, killed worker -----------------------------------------------------

_DISK_FULL = textwrap.dedent("""
    import resource, signal, sys
    import fastload
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]), int(sys.argv[4])))
    options = fastload.PackOptions(format=sys.argv[3], workers=1, progress=False)
    try:
        fastload.pack(sys.argv[1], sys.argv[2], options=options)
    except fastload.PackError as exc:
        print("PackError:", exc)
        sys.exit(3)
""")


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_disk_full_while_packing(tmp_path, fmt):
    root = tmp_path / "data"
    good_folder(str(root), per_class=40)  # ~80 x 2 KB
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = str(out_dir / "s.store")
    limit = 48 * 1024
    done = subprocess.run([sys.executable, "-c", _DISK_FULL, str(root), out, fmt, str(limit)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "disk full" in done.stdout and "nothing was written" in done.stdout
    assert os.listdir(out_dir) == []  # no store, no partial file, no lock file, no report


def test_killed_pack_leaves_no_partial_store(tmp_path):
    root = tmp_path / "data"
    good_folder(str(root), per_class=300)
    out = tmp_path / "out" / "s.lmdb"
    cmd = [sys.executable, "-m", "fastload.cli", "pack", str(root), "-o", str(out), "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(n.startswith(".s.lmdb.partial") for n in _listdir(out.parent)):
        assert proc.poll() is None and time.monotonic() < deadline, "pack finished too soon"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)  # mid-pack: the partial file exists, the store does not
    proc.wait(timeout=30)
    assert not out.exists()
    # The next pack replaces the dead pack's partial file with a complete store.
    _pack(str(root), str(out))
    assert sorted(os.listdir(out.parent)) == ["s.lmdb", "s.lmdb.report.json"]
    assert len(fastload.open_store(str(out))) == 600


def _listdir(path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def test_killed_worker_raises_worker_died_naming_its_files(tmp_path):
    """Driven by events, not by timing: each worker is stopped (SIGSTOP) as soon as it exists,
    so none can finish its chunks; once the pack's thread is waiting for their replies, every
    chunk it could send is in flight, and the first worker (which holds chunk 0) is killed."""
    psutil = pytest.importorskip("psutil")
    root = tmp_path / "data"
    photo = jpeg(seed=3, height=120, width=160)
    for i in range(400):  # 25 chunks of 16: both workers get two in flight
        write(str(root / "cls" / f"{i:03d}.jpg"), photo)
    out = tmp_path / "s.lmdb"
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            _pack(str(root), str(out), workers=2)
            outcome["error"] = None
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    started = time.time() - 1
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    me, stopped, deadline = psutil.Process(), {}, time.monotonic() + 60
    while not (len(stopped) == 2 and _waiting_for_replies(thread)):
        assert thread.is_alive() and time.monotonic() < deadline, "the pack never waited for its workers"
        for worker in me.children():
            if worker.pid not in stopped and _is_new_worker(worker, started):
                worker.send_signal(signal.SIGSTOP)
                stopped[worker.pid] = worker
        time.sleep(0.002)
    victim, other = sorted(stopped.values(), key=lambda p: (p.create_time(), p.pid))
    victim.kill()
    other.send_signal(signal.SIGCONT)
    thread.join(timeout=60)
    assert not thread.is_alive(), "pack hung after its worker was killed"
    error = outcome["error"]
    assert isinstance(error, fastload.WorkerDiedError), repr(error)
    message = str(error)
    assert f"worker process {victim.pid} was killed by SIGKILL" in message
    assert "while processing" in message and str(root) in message
    assert not out.exists() and os.listdir(tmp_path) == ["data"]


def _waiting_for_replies(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in the pack pool's wait for worker replies."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "_wait" and frame.f_code.co_filename.endswith("ordered.py"):
            return True
        frame = frame.f_back
    return False


def _is_new_worker(process, since: float) -> bool:
    try:
        return "fastload.workers.map_worker" in " ".join(process.cmdline()) and process.create_time() >= since
    except Exception:  # exited between listing and asking
        return False


def test_file_changed_between_validation_and_writing(tmp_path):
    from fastload.pack.worker import process as _process
    from fastload.pack.writer import source_payload as _source_payload
    from fastload.sources import Skipped

    path = write(str(tmp_path / "a.jpg"), jpeg(seed=1))
    packed = _process(path, fastload.PackOptions())
    assert packed.payload is None and _source_payload(path, packed) == jpeg(seed=1)
    write(path, jpeg(seed=2))  # replaced after it was validated
    result = _source_payload(path, packed)
    assert isinstance(result, Skipped) and "changed while it was being packed" in result.reason
