"""The LMDB page walker (fastload.stores.lmdb_pages) against py-lmdb itself: environments made
with the installed ``lmdb`` module read back the same through the walker, and valid LMDB
variants fastload does not read are refused as such (StoreFormatError), not called damage."""

from __future__ import annotations

import numpy as np
import pytest

import fastload
from fastload.stores.lmdb_pages import LmdbFile

lmdb = pytest.importorskip("lmdb")

PAGE = 4096


def _values(rng: np.random.Generator) -> dict[bytes, bytes]:
    """Record keys (8 bytes, big-endian) with values from a few bytes to several pages (on the
    leaf, and on overflow pages), and metadata-like keys that sort after them."""
    sizes = [1, 100, 1500, 2100, 4000, 5000, 9000, 20000, 70000, 3, 300]
    values = {i.to_bytes(8, "big"): rng.integers(0, 256, n, np.uint8).tobytes() for i, n in enumerate(sizes)}
    values[b"~header"] = b'{"json": true}'
    values[b"~paths"] = rng.integers(0, 256, 12000, np.uint8).tobytes()
    return values


def _write(path: str, values: dict[bytes, bytes], sub: bytes | None = None) -> None:
    env = lmdb.open(path, subdir=False, map_size=64 << 20, max_dbs=2 if sub else 0)
    db = env.open_db(sub) if sub else None
    with env.begin(write=True, db=db) as txn:
        for key, value in values.items():
            txn.put(key, value)
    env.close()


def _lmdb_reads(path: str) -> dict[bytes, bytes]:
    env = lmdb.open(path, subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        found = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    return found


def test_walker_reads_what_lmdb_wrote(tmp_path):
    path = str(tmp_path / "plain.lmdb")
    _write(path, _values(np.random.default_rng(0)))
    expected = _lmdb_reads(path)
    walker = LmdbFile(path, path)
    try:
        assert walker.meta.main.overflow_pages > 0  # some values lie on overflow pages
        assert {k: walker.get(k) for k in expected} == expected
        assert walker.keys_from(b"~") == sorted(k for k in expected if k >= b"~")
        assert walker.get((99).to_bytes(8, "big")) is None
        problems, records = walker.walk(count=11)
        assert (problems, records) == ([], {})
    finally:
        walker.close()


def test_named_sub_database_is_refused_as_a_variant(tmp_path):
    path = str(tmp_path / "named.lmdb")
    _write(path, _values(np.random.default_rng(1)), sub=b"images")
    walker = LmdbFile(path, path)  # the main tree holds only the sub-database's name
    with pytest.raises(fastload.StoreFormatError, match=r"named sub-databases \(images\)"):
        walker.get(b"~header")
    walker.close()
    with pytest.raises(fastload.StoreFormatError, match="named sub-databases") as caught:
        fastload.open_store(path)
    assert not isinstance(caught.value, fastload.CorruptStoreError)


def _rewrite(path: str, edits: list[tuple[int, bytes]]) -> None:
    with open(path, "r+b") as f:
        for offset, data in edits:
            f.seek(offset)
            f.write(data)


@pytest.mark.parametrize("variant, edits, message", [
    # data version 2 in both meta pages (a single flipped one would be damage)
    ("version", [(20, (2).to_bytes(4, "little")), (PAGE + 20, (2).to_bytes(4, "little"))], "data version 2"),
    ("big-endian", [(16, (0xBEEFC0DE).to_bytes(4, "big"))], "big-endian machine"),
    ("32-bit", [(12, (0xBEEFC0DE).to_bytes(4, "little")), (16, (1).to_bytes(4, "little"))], "32-bit"),
])
def test_other_lmdb_variants_are_refused_as_such(tmp_path, variant, edits, message):
    """The first meta page rewritten as each variant's would be (a 32-bit build's page header is
    12 bytes, so its magic sits 4 bytes earlier)."""
    path = str(tmp_path / f"{variant}.lmdb")
    _write(path, _values(np.random.default_rng(2)))
    _rewrite(path, edits)
    with pytest.raises(fastload.StoreFormatError, match=message) as caught:
        fastload.open_store(path)
    assert not isinstance(caught.value, fastload.CorruptStoreError)
    assert "mdb_dump" in str(caught.value)


def test_one_meta_page_with_another_version_is_damage(tmp_path):
    path = str(tmp_path / "flipped.lmdb")
    _write(path, _values(np.random.default_rng(3)))
    _rewrite(path, [(20, (2).to_bytes(4, "little"))])
    with pytest.raises(fastload.CorruptStoreError, match="meta page 0 is damaged"):
        LmdbFile(path, path)
