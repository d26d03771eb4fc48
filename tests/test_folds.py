"""Cross-validation folds (fastload.splits, `fastload split`) on a generated store: a folder of
images and a CSV with a patient_id column (several images per patient, imbalanced classes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from imagefiles import jpeg, write

import fastload
from fastload.cli import main

pytest.importorskip("sklearn")

CLASS_SIZES = {"benign": 41, "malignant": 17, "other": 7}  # imbalanced, none a multiple of 5


def _patients(n: int, rng: np.random.Generator) -> list[str]:
    """1 to 5 images per patient, patients in random order."""
    ids, p = [], 0
    while len(ids) < n:
        ids += [f"P{p:03d}"] * int(rng.integers(1, 6))
        p += 1
    return list(rng.permutation(ids[:n]))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("folds")
    rng = np.random.default_rng(0)
    labels = [c for c, n in CLASS_SIZES.items() for _ in range(n)]
    labels = list(rng.permutation(labels))
    patients = _patients(len(labels), rng)
    rows = ["image_id,label,patient_id,age"]
    for i, (label, patient) in enumerate(zip(labels, patients)):
        write(str(root / "img" / f"{i:03d}.jpg"), jpeg(seed=i, height=16, width=16))
        rows.append(f"{i:03d},{label},{patient},{20 + i % 50}")
    csv = root / "train.csv"
    csv.write_text("\n".join(rows) + "\n")
    store = str(root / "train.lmdb")
    options = fastload.PackOptions(workers=1, progress=False)
    fastload.pack(str(root / "img"), store, labels=str(csv), options=options)
    return {"root": root, "store": store, "csv": str(csv), "patients": patients}


def _every_record_once(made, n: int) -> None:
    seen = np.zeros(n, dtype=int)
    for train, val in made:
        assert train.dtype == val.dtype == np.int64
        assert not np.intersect1d(train, val).size and len(train) + len(val) == n
        seen[val] += 1
    assert (seen == 1).all()


def test_stratified_folds_keep_class_ratios_within_one_record(dataset):
    store = fastload.open_store(dataset["store"])
    made = fastload.folds(store, k=5, seed=0)
    _every_record_once(made, len(store))
    for c, name in enumerate(store.classes):
        ideal = CLASS_SIZES[name] / 5
        per_fold = [int((store.labels[val] == c).sum()) for _, val in made]
        assert all(abs(n - ideal) < 1 for n in per_fold), (name, per_fold)
    assert made.balance.counts.sum() == len(store) and made.balance.max_deviation < 1
    assert made.balance.classes == store.classes
    again, other = fastload.folds(store, k=5, seed=0), fastload.folds(store, k=5, seed=1)
    assert all((a[1] == b[1]).all() for a, b in zip(made, again))  # deterministic by seed
    assert any(a[1].tolist() != b[1].tolist() for a, b in zip(made, other))
    store.close()


@pytest.mark.parametrize("stratify", [True, False])
def test_groups_never_share_a_validation_fold(dataset, stratify):
    made = fastload.folds(dataset["store"], k=5, stratify=stratify, groups="patient_id", seed=3)
    store = fastload.open_store(dataset["store"])
    patients = store.metadata["patient_id"]
    assert patients.tolist() == dataset["patients"]  # the CSV's column, aligned with records
    _every_record_once(made, len(store))
    folds_of = {}
    for fold, (_, val) in enumerate(made):
        for patient in set(patients[val].tolist()):
            assert folds_of.setdefault(patient, fold) == fold, patient
    assert made.groups == "patient_id" and made.stratify is stratify
    by_array = fastload.folds(store, k=5, stratify=stratify, groups=patients, seed=3)
    assert by_array.groups == "(array)" and (by_array.val_fold == made.val_fold).all()
    store.close()


def test_json_round_trip_and_refused_on_another_store(dataset, small_lmdb, tmp_path):
    made = fastload.folds(dataset["store"], k=4, groups="patient_id", seed=7)
    path = made.save(tmp_path / "folds.json")
    data = json.loads(open(path).read())
    assert data["store"] == dataset["store"] and data["k"] == 4 and data["seed"] == 7
    assert data["groups"] == "patient_id" and data["fingerprint"]["count"] == sum(CLASS_SIZES.values())
    for loaded in (fastload.load_folds(path), fastload.load_folds(path, dataset["store"])):
        assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(made, loaded))
        assert (loaded.balance.counts == made.balance.counts).all()
    with pytest.raises(fastload.FoldsError, match="different or repacked store"):
        fastload.load_folds(path, small_lmdb)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(fastload.FoldsError, match="not a fastload folds file"):
        fastload.load_folds(tmp_path / "bad.json", dataset["store"])


def test_folds_of_shards_fit_the_whole_store(dataset, tmp_path):
    out = str(tmp_path / "train.h5")
    fastload.pack(str(dataset["root"] / "img"), out, labels=dataset["csv"], options=fastload.PackOptions(
        format="hdf5", workers=1, progress=False, shard_size=30))
    sharded = fastload.folds(str(tmp_path / "train-*.h5"), k=3, groups="patient_id")
    whole = fastload.folds(dataset["store"], k=3, groups="patient_id")
    assert (sharded.val_fold == whole.val_fold).all()
    sharded.save(tmp_path / "f.json")
    fastload.load_folds(tmp_path / "f.json", dataset["store"])  # same records: accepted


def test_what_cannot_be_split_says_why(dataset, tmp_path):
    store = dataset["store"]
    with pytest.raises(fastload.FoldsError, match="no metadata column 'site'.*'patient_id', 'age'"):
        fastload.folds(store, groups="site")
    with pytest.raises(fastload.FoldsError, match="groups are too few for k=60"):
        fastload.folds(store, k=60, stratify=False, groups="patient_id")
    with pytest.raises(fastload.FoldsError, match="every class .* fewer than k=42"):
        fastload.folds(store, k=42)
    with pytest.warns(UserWarning, match=r"\['other'\] have fewer than k=8"):
        fastload.folds(store, k=8)
    with pytest.raises(ValueError, match="k must be an integer of at least 2"):
        fastload.folds(store, k=1)
    with pytest.raises(fastload.FoldsError, match="one value per record"):
        fastload.folds(store, groups=["a", "b"])
    rows = open(dataset["csv"]).read().splitlines()
    rows[3] = rows[3].replace(",benign,", ",,").replace(",malignant,", ",,").replace(",other,", ",,")
    rows[5] = ",".join(rows[5].split(",")[:2] + ["", "30"])  # no patient_id
    (tmp_path / "partial.csv").write_text("\n".join(rows) + "\n")
    partial = str(tmp_path / "partial.lmdb")
    fastload.pack(str(dataset["root"] / "img"), partial, labels=str(tmp_path / "partial.csv"),
                  options=fastload.PackOptions(workers=1, progress=False))
    with pytest.raises(fastload.FoldsError, match="1 unlabelled records .* stratify=False"):
        fastload.folds(partial)
    made = fastload.folds(partial, stratify=False)
    assert made.balance.classes[-1] == "(unlabelled)" and made.balance.counts[:, -1].sum() == 1
    with pytest.raises(fastload.FoldsError, match="1 records have no group in 'patient_id'"):
        fastload.folds(partial, stratify=False, groups="patient_id")


def test_cli_split_prints_balance_and_writes_json(dataset, tmp_path, capsys):
    out = str(tmp_path / "folds.json")
    assert main(["split", dataset["store"], "--folds", "3", "--stratify", "--groups", "patient_id",
                 "--seed", "1", "-o", out]) == 0
    text = capsys.readouterr().out
    assert "3 folds of" in text and "grouped by patient_id" in text and "malignant" in text
    assert "largest deviation from the ideal" in text and f"wrote {out}" in text
    loaded = fastload.load_folds(out)
    assert loaded.k == 3 and loaded.seed == 1 and loaded.groups == "patient_id"
    assert main(["split", dataset["store"], "--folds", "99", "--no-stratify"]) == 2
    assert "too few for k=99" in capsys.readouterr().err
    assert main(["inspect", dataset["store"]]) == 0
    assert "patient_id: string" in capsys.readouterr().out
