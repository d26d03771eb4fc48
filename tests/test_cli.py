"""The ``fastload`` command: pack, inspect (store and raw folder, --json) and verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from imagefiles import good_folder, pixels, png16, write

import fastload
from fastload.cli import main


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def folder(tmp_path) -> str:
    root = str(tmp_path / "data")
    good_folder(root, per_class=4)
    write(os.path.join(root, "dog", "broken.jpg"), b"<html>oops</html>")
    return root


def test_pack_default_output_summary_and_report(capsys, folder, tmp_path):
    code, out, err = _run(capsys, "pack", folder, "-q", "--workers", "1")
    assert code == 0, err
    store_path = str(tmp_path / "data.lmdb")
    assert "packed 8 images, skipped 1" in out and f"wrote {store_path}" in out
    assert "broken.jpg: not an image: the file holds HTML/XML text" in out
    assert os.path.isfile(store_path + ".report.json")
    code, out, err = _run(capsys, "pack", folder, "-q")
    assert code == 2 and "already exists; pass --overwrite" in err
    code, out, err = _run(capsys, "pack", folder, "-q", "--overwrite", "--strict")
    assert code == 2 and "broken.jpg" in err and "strict" in err
    assert len(fastload.open_store(store_path)) == 8  # the failed strict pack kept the old store


def test_pack_hdf5_raw_with_csv(capsys, folder, tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file;kind\ncat/good_00.jpg;a\ndog/good_01.jpg;b\n")
    out_path = str(tmp_path / "x.h5")
    code, out, err = _run(capsys, "pack", folder, "--format", "hdf5", "--store", "raw", "-o", out_path,
                          "--labels", str(csv), "--path-column", "file", "--label-column", "kind", "-q")
    assert code == 0, err
    store = fastload.open_store(out_path)
    assert store.classes == ["a", "b"] and store.header.payload == "raw"
    assert store.get(1)[0].shape == (40, 56, 3)


def test_inspect_store_text_and_json(capsys, folder, tmp_path):
    store_path = str(tmp_path / "s.lmdb")
    assert _run(capsys, "pack", folder, "-o", store_path, "-q", "--workers", "1")[0] == 0
    code, out, err = _run(capsys, "inspect", store_path)
    assert code == 0, err
    assert f"{store_path}: 8 images; the records hold each file's original bytes" in out
    assert "cat: 4" in out and "skipped inputs: 1" in out
    assert "channels: 3 (8 images)" in out and "pixel type: uint8 (8 images)" in out and "file type: jpeg (8 images)" in out
    code, out, _ = _run(capsys, "inspect", store_path, "--json")
    profile = json.loads(out)
    assert profile["count"] == 8 and profile["per_class"] == {"cat": 4, "dog": 4}
    assert profile["imbalance"] == 1.0 and profile["channels"] == {"3": 8}
    assert profile["dtype"] == {"uint8": 8} and profile["encoding"] == {"jpeg": 8}
    assert len(profile["mean"]) == 3 and all(0 < m < 1 for m in profile["mean"])
    assert profile["skipped_inputs"][0]["path"].endswith("broken.jpg")
    assert profile["format_version"] == 1


def test_inspect_raw_folder_json_matches_the_store(capsys, folder, tmp_path):
    write(os.path.join(folder, "dog", "deep16.png"), png16(pixels(40, 56, 1, dtype="uint16")))
    code, out, err = _run(capsys, "inspect", folder, "--json", "--workers", "2")
    assert code == 0, err
    raw = json.loads(out)
    assert raw["count"] == 9 and raw["payload"] == "files" and raw["skipped"] == 1
    assert raw["channels"] == {"1": 1, "3": 8} and raw["dtype"] == {"uint16": 1, "uint8": 8}
    store_path = str(tmp_path / "s.h5")
    code, out, _ = _run(capsys, "pack", folder, "--format", "hdf5", "-o", store_path, "-q")
    # the one 16-bit PNG is named as the reading's bottleneck, with the remedy and its size (40 x 56 x 2 bytes)
    assert code == 0 and "note: 1 records are 16-bit PNGs" in out and "--store raw (0.0 MB for them)" in out
    code, out, _ = _run(capsys, "pack", folder, "--store", "raw", "-o", str(tmp_path / "r.lmdb"), "-q")
    assert code == 0 and "note:" not in out  # stored decoded: nothing to say
    packed = json.loads(_run(capsys, "inspect", store_path, "--json")[1])
    for key in ("count", "per_class", "channels", "dtype", "encoding", "height", "width", "mean", "std"):
        assert raw[key] == packed[key], key
    code, out, _ = _run(capsys, "inspect", folder)
    assert code == 0 and "pixel type: uint8 (8 images), uint16 (1)" in out and "channels: 3 (8 images), 1 (1)" in out
    assert "files not yet packed" in out


def test_verify_ok_bad_and_not_a_store(capsys, folder, tmp_path):
    store_path = str(tmp_path / "s.h5")
    assert _run(capsys, "pack", folder, "--format", "hdf5", "-o", store_path, "-q")[0] == 0
    code, out, _ = _run(capsys, "verify", store_path, "-q", "--decode")
    assert code == 0 and "all 8 records verified" in out
    store = fastload.open_store(store_path)
    payload = store.read(6)
    needle = payload[len(payload) // 2 :][:32]  # entropy-coded: unique to record 6
    store.close()
    with open(store_path, "r+b") as f:
        blob = f.read()
        f.seek(blob.index(needle))
        f.write(b"\x00" * 8)
    code, out, err = _run(capsys, "verify", store_path, "-q")
    assert code == 1
    assert "record 6 (from " in err and "dog" in err and "checksum mismatch" in err
    assert "1 of 8 records are bad" in err
    junk = write(str(tmp_path / "junk.lmdb"), b"\x00" * 4096)
    code, out, err = _run(capsys, "verify", junk)
    assert code == 2 and "not an LMDB file" in err


def test_console_script_runs(tmp_path):
    root = str(tmp_path / "data")
    good_folder(root, per_class=2)
    exe = os.path.join(os.path.dirname(sys.executable), "fastload")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "fastload.cli"]
    done = subprocess.run([*cmd, "pack", root, "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*cmd, "verify", root + ".lmdb", "-q"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "all 4 records verified" in done.stdout


def test_verify_and_inspect_exit_1_on_a_truncated_lmdb_store(capsys, folder, tmp_path):
    store_path = str(tmp_path / "s.lmdb")
    assert _run(capsys, "pack", folder, "-o", store_path, "-q", "--workers", "1")[0] == 0
    size = os.path.getsize(store_path)
    os.truncate(store_path, size - 4096)  # an interrupted copy: LMDB itself dies of SIGBUS here
    code, out, err = _run(capsys, "verify", store_path, "-q")
    assert code == 1 and f"truncated: {size - 4096:,} of {size:,} bytes" in err
    assert "0 of 8 records are bad; 1 problem with the store as a whole" in err and "re-copy" in err
    code, out, err = _run(capsys, "inspect", store_path)
    assert code == 1 and f"{store_path}: damaged store: truncated: {size - 4096:,} of {size:,} bytes" in err


def test_verify_lists_every_bad_record_and_damage_to_the_structure(capsys, folder, tmp_path):
    from storefiles import flip_byte_in_record

    store_path = str(tmp_path / "s.lmdb")
    assert _run(capsys, "pack", folder, "-o", store_path, "-q", "--workers", "1")[0] == 0
    for index in (1, 6):
        flip_byte_in_record(store_path, index)
    code, out, err = _run(capsys, "verify", store_path, "-q")
    assert code == 1 and "record 1 (from " in err and "record 6 (from " in err
    assert "2 of 8 records are bad" in err
    with open(store_path, "r+b") as f:  # the leaf pages' numbers: every record on them is lost
        blob = f.read()
        for page in range(2, len(blob) // 4096):
            if blob[page * 4096 + 10] == 0x02:  # an LMDB leaf page
                f.seek(page * 4096)
                f.write(b"\xff" * 8)
    code, out, err = _run(capsys, "verify", store_path, "-q")
    assert code == 1 and "is damaged (its header says page" in err


def _subcommands() -> dict:
    import argparse

    from fastload.cli import build_parser

    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_has_a_description_examples_and_help_for_every_option(command):
    import argparse

    parser = _subcommands()[command]
    assert parser.description and "examples:" in (parser.epilog or "")
    bare = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._HelpAction)]
    assert not bare, f"options without help text: {bare}"
    examples = [line.split()[1] for line in parser.epilog.splitlines()[1:] if line.strip()]
    assert set(examples) == {command}, "every example runs this command"


def test_top_level_help_speaks_to_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "fastload pack --format lmdb data" in out
    assert "``" not in out and "thin layer" not in out  # reST and developers' words stay in the code
