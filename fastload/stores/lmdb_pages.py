"""LMDB files read without LMDB: every page number, offset and size is checked before use.

Why this is hand-written rather than py-lmdb: LMDB maps its file and trusts what it finds there: a page past the end of a truncated file,
or a value whose size a flipped bit enlarged (py-lmdb copies it), kills the reader with a
SIGBUS; other damage surfaces as py-lmdb's own ``CorruptedError``, and its C code has
assertions that abort. A store is read-only once packed, so fastload reads its B-tree itself,
with ``pread`` (never a memory map, so a file that shrinks later cannot fault either), and
checks each page it walks: the pages' own numbers, flags and bounds, the nodes' offsets and
sizes, and that every page number and value lies inside the file. Branch pages are checked
when a store is opened (they are few: one per ~200 leaves), a leaf page when a record on it
is first read, and every page by ``walk()`` (``fastload verify``).

The layout (LMDB 0.9, 64-bit, little-endian; ``mdb.c``): pages of ``psize`` bytes; pages 0
and 1 hold the two meta records (the one with the larger txnid is current); a page starts with
a 16-byte header (page number, pad, flags, lower/upper bounds or an overflow page count),
then 2-byte offsets of its nodes; a node is data size (or child page number), flags and key
size (8 bytes), the key, then the value, or for F_BIGDATA the number of the overflow page
whose data, after its 16-byte header, is the value.

Valid LMDB files of other variants are refused with a ``StoreFormatError`` saying which, not
reported as damage: a 32-bit build's (12-byte page headers), a big-endian machine's, another data
version (LMDB 1.0), and named sub-databases (``max_dbs``). fastload never writes them.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptStoreError, StoreFormatError
from .fileio import ReadOnlyFile, ShortReadError

__all__ = ["LmdbFile", "Leaf", "Meta", "Tree"]

PAGE_HEADER = 16
NODE_HEADER = 8
P_BRANCH, P_LEAF, P_OVERFLOW, P_META = 0x01, 0x02, 0x04, 0x08
_CLEARED = 0x10 | 0x8000  # P_DIRTY, P_KEEP: in-memory states, tolerated on disk
F_BIGDATA, F_SUBDATA = 0x01, 0x02
DB_RECORD = 48  # sizeof(MDB_db): the value of a named sub-database's node in the main tree
MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
P_INVALID = (1 << 64) - 1
MAX_DEPTH = 32  # LMDB's CURSOR_STACK: no deeper tree can be read by LMDB either
_MAGIC_LE, _MAGIC_BE = MAGIC.to_bytes(4, "little"), MAGIC.to_bytes(4, "big")
_VERSION_LE = DATA_VERSION.to_bytes(4, "little")
_NODE = np.dtype([("size", "<u4"), ("flags", "<u2"), ("ksize", "<u2")])
_EIGHT = np.arange(8)


@dataclass(frozen=True)
class Tree:
    """An MDB_db record: one B-tree's statistics and root page."""

    flags: int
    depth: int
    branch_pages: int
    leaf_pages: int
    overflow_pages: int
    entries: int
    root: int

    @classmethod
    def parse(cls, page: bytes, at: int) -> Tree:
        flags, depth, branch, leaf, overflow, entries, root = struct.unpack_from("<HHQQQQQ", page, at + 4)
        return cls(flags, depth, branch, leaf, overflow, entries, root)


@dataclass(frozen=True)
class Meta:
    """One of the two meta pages: page size, last used page, transaction id, the two trees."""

    number: int
    psize: int
    last_pg: int
    txnid: int
    free: Tree
    main: Tree

    @classmethod
    def parse(cls, page: bytes, number: int) -> Meta:
        """The meta record of meta page ``number``; ``ValueError`` saying why it is not one."""
        if len(page) < 152:
            raise ValueError("the file ends inside it")
        pgno, flags = struct.unpack_from("<Q2xH", page, 0)
        magic, version = struct.unpack_from("<II", page, 16)
        if magic != MAGIC:
            raise ValueError("no LMDB magic")
        if version != DATA_VERSION:
            raise ValueError(f"LMDB data version {version}, expected {DATA_VERSION}")
        if pgno != number or flags & ~_CLEARED != P_META:
            raise ValueError(f"its header says page {pgno}, flags 0x{flags:x}")
        (psize,) = struct.unpack_from("<I", page, 40)
        if psize < 512 or psize > 65536 or psize & (psize - 1):
            raise ValueError(f"page size {psize} is not a power of two in 512..65536")
        last_pg, txnid = struct.unpack_from("<QQ", page, 136)
        return cls(number, psize, last_pg, txnid, Tree.parse(page, 40), Tree.parse(page, 88))


@dataclass
class Leaf:
    """The checked content of one leaf page: record keys (8 bytes, as big-endian integers)
    with the file offsets and sizes of their values, and any other keys in ``other``."""

    pgno: int
    keys: np.ndarray  # uint64
    offsets: np.ndarray  # int64: where each value starts in the file
    sizes: np.ndarray  # int64
    overflow: np.ndarray  # int64: first overflow page of each value, -1 when on the leaf
    other: dict[bytes, tuple[int, int, int]]  # key -> (offset, size, overflow page or -1)


class LmdbFile:
    """A finished LMDB file opened for checked reading (``strict``: damage found at open raises).

    ``problems`` lists what was found at open without raising (``strict=False``), for verify.
    """

    def __init__(self, path: str, data_path: str, strict: bool = True) -> None:
        self.path = path  # the store, for messages
        self.file = ReadOnlyFile(data_path)
        self.problems: list[str] = []
        self._strict = strict
        try:
            self._open()
        except BaseException:
            self.file.close()
            raise

    # --- errors -----------------------------------------------------------------------------
    def damage(self, reason: str) -> CorruptStoreError:
        return CorruptStoreError(self.path, reason)

    def _problem(self, reason: str) -> None:
        if self._strict:
            raise self.damage(reason)
        self.problems.append(reason)

    # --- opening ----------------------------------------------------------------------------
    def _refuse_variant(self, first: bytes) -> None:
        """A ``StoreFormatError`` for a valid LMDB file of a layout fastload does not read, told
        from its first meta page (both meta pages, for the data version: one may be damaged)."""
        if len(first) < 24 or first[16:20] == _MAGIC_LE and first[20:24] == _VERSION_LE:
            return
        advice = ("fastload reads LMDB files of 64-bit little-endian machines (x86-64, ARM64): re-pack the "
                  "source there with 'fastload pack', or convert the file there with LMDB's mdb_dump and mdb_load")
        if first[12:16] in (_MAGIC_LE, _MAGIC_BE):
            order = "little" if first[12:16] == _MAGIC_LE else "big"
            raise StoreFormatError(self.path, f"an LMDB file written by a 32-bit {order}-endian build of LMDB "
                                   f"(12-byte page headers); {advice}")
        if first[16:20] == _MAGIC_BE:
            raise StoreFormatError(self.path, f"an LMDB file written on a big-endian machine; {advice}")
        if first[16:20] == _MAGIC_LE:
            version = int.from_bytes(first[20:24], "little")
            psize = int.from_bytes(first[40:44], "little")
            second = self._read_meta_page(psize) if 512 <= psize <= 65536 else b""
            if second[16:24] == first[16:24]:  # both meta pages say so: not a flipped bit
                raise StoreFormatError(self.path, f"an LMDB file of data version {version} (fastload reads "
                                       f"version {DATA_VERSION}, LMDB 0.9's): dump it with that LMDB's "
                                       "mdb_dump and load it with LMDB 0.9's mdb_load, or re-pack the source")

    def _open(self) -> None:
        size = self.file.size
        metas = []
        first = self.file.read(0, min(size, 4096)) if size else b""
        self._refuse_variant(first)
        for number in (0, 1):
            try:
                page = first if number == 0 else self._read_meta_page(metas[0].psize)
                metas.append(Meta.parse(page, number))
            except ValueError as exc:
                if number == 0 and not self._has_meta_one():
                    raise StoreFormatError(self.path, "not an LMDB file") from None
                raise self.damage(f"LMDB meta page {number} is damaged ({exc})") from None
        if metas[0].psize != metas[1].psize:
            raise self.damage(f"the two LMDB meta pages disagree on the page size "
                              f"({metas[0].psize} and {metas[1].psize})")
        meta = metas[1] if metas[0].txnid < metas[1].txnid else metas[0]  # LMDB's own choice
        self.meta, self.psize = meta, meta.psize
        self.end = (meta.last_pg + 1) * meta.psize  # every used page lies before this offset
        if meta.last_pg < 2 or meta.last_pg >= 1 << 40:
            raise self.damage(f"LMDB meta page {meta.number} says the last page is {meta.last_pg}")
        if size < self.end:
            self._check_short_file(size)
        main = meta.main
        if main.flags:
            raise StoreFormatError(self.path, f"its LMDB database has flags 0x{main.flags:x} (duplicate "
                                   "or integer keys): not a fastload store")
        if main.root == P_INVALID:
            raise StoreFormatError(self.path, "an empty LMDB database: not a fastload store")
        if not 2 <= main.root <= meta.last_pg or not 1 <= main.depth <= MAX_DEPTH:
            raise self.damage(f"LMDB meta page {meta.number} names root page {main.root} at depth "
                              f"{main.depth}, outside the file's {meta.last_pg + 1} pages")
        self._read_branches()

    def _has_meta_one(self) -> bool:
        """Whether meta page 1 is there, at one of the page sizes LMDB uses."""
        for psize in (4096, 8192, 16384, 32768, 65536):
            try:
                Meta.parse(self._read_meta_page(psize), 1)
                return True
            except ValueError:
                continue
        return False

    def _read_meta_page(self, offset: int) -> bytes:
        try:
            return self.file.read(offset, 152)
        except ShortReadError:
            return b""

    def _check_short_file(self, size: int) -> None:
        """A file shorter than its last used page is truncated, unless every missing page is
        free (LMDB need not write pages it freed in the transaction that allocated them)."""
        have = size // self.psize
        try:
            free = self._free_pages()
        except CorruptStoreError:
            free = set()
        if all(p in free for p in range(have, self.meta.last_pg + 1)):
            return
        self._problem(f"truncated: {size:,} of {self.end:,} bytes")

    def _free_pages(self) -> set[int]:
        """Page numbers listed in the free-page database (values: count, then page numbers)."""
        tree = self.meta.free
        if tree.root == P_INVALID:
            return set()
        free: set[int] = set()
        for pgno in self._leaf_pages(tree.root, tree.depth):
            for value in self._leaf_values(pgno):
                ids = np.frombuffer(value, "<u8")
                free.update(ids[1 : 1 + int(ids[0])].tolist() if len(ids) else [])
        return free

    def _leaf_pages(self, root: int, depth: int) -> list[int]:
        level = [root]
        for _ in range(depth - 1):
            level = [child for pgno in level for _, child in self.branch(pgno, ordered=False)]
            if len(level) > self.meta.last_pg:
                raise self.damage("the LMDB tree has more pages than the file")
        return level

    def _leaf_values(self, pgno: int) -> list[bytes]:
        leaf = self.leaf(pgno, ordered=False)
        spans = list(zip(leaf.offsets.tolist(), leaf.sizes.tolist())) + [v[:2] for v in leaf.other.values()]
        return [self.read(offset, size) for offset, size in spans]

    def _read_branches(self) -> None:
        """Check every branch page of the main tree; keep each leaf's page and lowest key."""
        main = self.meta.main
        level: list[tuple[bytes, int]] = [(b"", main.root)]
        seen = {main.root}
        self.branch_pgnos: list[int] = []
        for _ in range(main.depth - 1):
            below: list[tuple[bytes, int]] = []
            for low, pgno in level:
                nodes = self.branch(pgno)
                self.branch_pgnos.append(pgno)
                for i, (key, child) in enumerate(nodes):
                    if child in seen:
                        raise self.damage(f"LMDB branch page {pgno} points to page {child} twice")
                    seen.add(child)
                    below.append((low if i == 0 else key, child))
            level = below
            if len(level) > self.meta.last_pg:
                raise self.damage("the LMDB tree has more pages than the file")
        keys = [low for low, _ in level]
        if any(a >= b for a, b in zip(keys, keys[1:])):
            raise self.damage("the LMDB branch pages' keys are out of order")
        branches = len(self.branch_pgnos)
        if branches != main.branch_pages or len(level) != main.leaf_pages:
            self._problem(f"the LMDB tree has {branches} branch and {len(level)} leaf pages, its meta "
                          f"page says {main.branch_pages} and {main.leaf_pages}")
        self.leaf_keys = keys
        self.leaf_pgnos = [pgno for _, pgno in level]

    # --- pages ------------------------------------------------------------------------------
    def page(self, pgno: int) -> bytes:
        if not 2 <= pgno <= self.meta.last_pg:
            raise self.damage(f"page number {pgno} lies outside the file's {self.meta.last_pg + 1} pages")
        try:
            return self.file.read(pgno * self.psize, self.psize)
        except ShortReadError:
            raise self.damage(f"page {pgno} lies past the end of the file (truncated)") from None

    def _nodes(self, pgno: int, kind: int) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray]:
        """The page, its nodes' offsets, headers and key ends, each checked to lie in the page."""
        page = self.page(pgno)
        number, flags, lower, upper = struct.unpack_from("<Q2xHHH", page, 0)
        name = "branch" if kind == P_BRANCH else "leaf"
        if number != pgno:
            raise self.damage(f"page {pgno} is damaged (its header says page {number})")
        if flags & ~_CLEARED != kind:
            raise self.damage(f"page {pgno} should be an LMDB {name} page, its flags are 0x{flags:x}")
        psize = self.psize
        if not PAGE_HEADER < lower <= upper <= psize or (lower - PAGE_HEADER) % 2:
            raise self.damage(f"{name} page {pgno} is damaged (bounds {lower}..{upper})")
        count = (lower - PAGE_HEADER) // 2
        at = np.frombuffer(page, "<u2", count, PAGE_HEADER).astype(np.int64)
        if at.min() < upper or at.max() > psize - NODE_HEADER:
            raise self.damage(f"{name} page {pgno} is damaged (a node lies outside the page)")
        raw = np.frombuffer(page, np.uint8)
        heads = np.ascontiguousarray(raw[at[:, None] + _EIGHT]).view(_NODE).ravel()
        key_end = at + NODE_HEADER + heads["ksize"]
        if key_end.max() > psize:
            raise self.damage(f"{name} page {pgno} is damaged (a key runs past the page)")
        return page, at, heads, key_end

    def branch(self, pgno: int, ordered: bool = True) -> list[tuple[bytes, int]]:
        """A branch page's (key, child page) pairs, checked; the first key is empty in LMDB.
        ``ordered``: keys compare as bytes (not so in the free-page tree's integer keys)."""
        page, at, heads, key_end = self._nodes(pgno, P_BRANCH)
        if len(at) < 2:
            raise self.damage(f"branch page {pgno} is damaged (fewer than 2 children)")
        children = heads["size"].astype(np.int64) | (heads["flags"].astype(np.int64) << 32)
        if children.min() < 2 or children.max() > self.meta.last_pg:
            raise self.damage(f"branch page {pgno} is damaged (a child page lies outside the file)")
        keys = [b""] + [page[a + NODE_HEADER : e] for a, e in zip(at[1:].tolist(), key_end[1:].tolist())]
        if ordered and any(a >= b for a, b in zip(keys[1:], keys[2:])):
            raise self.damage(f"branch page {pgno} is damaged (keys out of order)")
        return list(zip(keys, children.tolist()))

    def leaf(self, pgno: int, ordered: bool = True) -> Leaf:
        """A leaf page's keys and where their values lie, every offset checked against the file."""
        page, at, heads, key_end = self._nodes(pgno, P_LEAF)
        raw = np.frombuffer(page, np.uint8)
        flags = heads["flags"]
        if (flags > F_BIGDATA).any():
            self._refuse_sub_databases(page, at, heads, key_end)
            raise self.damage(f"leaf page {pgno} is damaged (node flags 0x{int(flags.max()):x}: duplicate "
                              "data or sub-databases, which fastload stores never hold)")
        sizes = heads["size"].astype(np.int64)
        big = flags == F_BIGDATA
        start = key_end  # the value (or its overflow page number) follows the key
        if (start + np.where(big, 8, sizes)).max() > self.psize:
            raise self.damage(f"leaf page {pgno} is damaged (a value runs past the page)")
        overflow = np.full(len(at), -1, np.int64)
        if big.any():
            numbers = np.ascontiguousarray(raw[start[big][:, None] + _EIGHT]).view("<u8").ravel()
            if numbers.min() < 2 or numbers.max() > self.meta.last_pg:
                raise self.damage(f"leaf page {pgno} is damaged (a value's page lies outside the file)")
            overflow[big] = numbers.astype(np.int64)
        offsets = np.where(big, overflow * self.psize + PAGE_HEADER, pgno * self.psize + start)
        if (offsets + sizes).max() > self.end:
            raise self.damage(f"leaf page {pgno} is damaged (a value runs past the file's last page)")
        ksize = heads["ksize"]
        eight = ksize == 8
        keys = np.ascontiguousarray(raw[(at[eight] + NODE_HEADER)[:, None] + _EIGHT]).view(">u8").ravel()
        if ordered and len(keys) > 1 and not (keys[1:] > keys[:-1]).all():
            raise self.damage(f"leaf page {pgno} is damaged (keys out of order)")
        other = {page[a + NODE_HEADER : e]: (o, s, v) for a, e, o, s, v in zip(
            at[~eight].tolist(), key_end[~eight].tolist(), offsets[~eight].tolist(),
            sizes[~eight].tolist(), overflow[~eight].tolist())}
        return Leaf(pgno, keys.astype(np.uint64), offsets[eight], sizes[eight], overflow[eight], other)

    def _refuse_sub_databases(self, page: bytes, at: np.ndarray, heads: np.ndarray, key_end: np.ndarray) -> None:
        """A ``StoreFormatError`` for a named sub-database's node (F_SUBDATA, an MDB_db record
        as its value, a name for key: not a record's 8-byte key, which a flipped bit would be)."""
        named = (heads["flags"] == F_SUBDATA) & (heads["size"] == DB_RECORD) & (heads["ksize"] != 8)
        if not named.any():
            return
        names = [page[a + NODE_HEADER : e].decode("utf-8", "backslashreplace")
                 for a, e in zip(at[named].tolist(), key_end[named].tolist())]
        raise StoreFormatError(self.path, f"an LMDB environment with named sub-databases ({', '.join(names)}); "
                               "fastload stores keep everything in the unnamed database: pack the images "
                               "with 'fastload pack' (it does not read other LMDB layouts)")

    # --- values -----------------------------------------------------------------------------
    def leaf_index(self, key: bytes) -> int:
        """Which leaf (index into ``leaf_pgnos``) holds ``key``, if the store holds it."""
        return bisect.bisect_right(self.leaf_keys, key) - 1

    def locate(self, key: bytes) -> tuple[int, int] | None:
        """(file offset, size) of the value of ``key``, or None if the store has no such key."""
        leaf = self.leaf(self.leaf_pgnos[self.leaf_index(key)])
        if len(key) == 8:
            number = int.from_bytes(key, "big")
            i = int(np.searchsorted(leaf.keys, number))
            if i < len(leaf.keys) and int(leaf.keys[i]) == number:
                return int(leaf.offsets[i]), int(leaf.sizes[i])
            return None
        found = leaf.other.get(key)
        return None if found is None else found[:2]

    def read(self, offset: int, size: int) -> bytes:
        try:
            return self.file.read(offset, size)
        except ShortReadError:
            raise self.damage(f"bytes {offset:,}..{offset + size:,} lie past the end of the file "
                              f"({self.file.size:,} bytes; truncated)") from None

    def get(self, key: bytes) -> bytes | None:
        found = self.locate(key)
        return None if found is None else self.read(*found)

    def close(self) -> None:
        self.file.close()

    # --- whole-file check (verify) ---------------------------------------------------------------
    def keys_from(self, key: bytes) -> list[bytes]:
        """Every key >= ``key``, in order (the metadata keys at the end of a store)."""
        found: list[bytes] = []
        for pgno in self.leaf_pgnos[max(self.leaf_index(key), 0):]:
            leaf = self.leaf(pgno)
            names = [int(k).to_bytes(8, "big") for k in leaf.keys] + list(leaf.other)
            found += sorted(k for k in names if k >= key)
        return found

    def walk(self, count: int) -> tuple[list[str], dict[int, str]]:
        """Check every page of the main tree and every overflow page header. Returns problems of
        the store, and problems of single records (keys below ``count``) by record index."""
        problems: list[str] = []
        records: dict[int, str] = {}
        runs: list[tuple[int, int, int | None]] = [(p, 1, None) for p in self.branch_pgnos]
        entries = overflow_pages = 0
        bounds = self.leaf_keys[1:] + [None]
        for low, high, pgno in zip(self.leaf_keys, bounds, self.leaf_pgnos):
            runs.append((pgno, 1, None))
            try:
                leaf = self.leaf(pgno)
            except CorruptStoreError as exc:
                problems.append(exc.reason)  # each record on it then fails its own read
                continue
            names = [int(k).to_bytes(8, "big") for k in leaf.keys] + list(leaf.other)
            entries += len(names)
            if any(k < low or (high is not None and k >= high) for k in names):
                problems.append(f"leaf page {pgno} holds keys that belong on another page")
            values = list(zip(leaf.keys.tolist(), leaf.overflow.tolist(), leaf.sizes.tolist()))
            values += [(None, v[2], v[1]) for v in leaf.other.values()]
            for key, first, size in values:
                record = key if key is not None and key < count else None
                if key is not None and key >= count:
                    problems.append(f"leaf page {pgno} holds key {key}, past the {count} records")
                if first < 0:
                    continue
                pages, reason = self._overflow_header(first, size)
                overflow_pages += pages
                runs.append((first, max(pages, 1), record))
                if reason and record is not None:
                    records[record] = reason
                elif reason:
                    problems.append(f"a metadata value's {reason}")
        if entries != self.meta.main.entries:
            problems.append(f"the LMDB tree holds {entries} entries, its meta page says {self.meta.main.entries}")
        if overflow_pages != self.meta.main.overflow_pages:
            problems.append(f"the LMDB tree uses {overflow_pages} overflow pages, its meta page says "
                            f"{self.meta.main.overflow_pages}")
        self._check_overlaps(runs, problems, records)
        return problems, records

    def _overflow_header(self, first: int, size: int) -> tuple[int, str | None]:
        try:
            head = self.read(first * self.psize, PAGE_HEADER)
        except CorruptStoreError as exc:
            return 0, exc.reason
        number, flags, pages = struct.unpack_from("<Q2xHI", head, 0)
        if number != first or flags & ~_CLEARED != P_OVERFLOW:
            return 0, f"overflow page {first} is damaged (its header says page {number}, flags 0x{flags:x})"
        if pages * self.psize < PAGE_HEADER + size:
            return pages, f"overflow page {first} is damaged (it counts {pages} pages for {size:,} bytes)"
        if first + pages - 1 > self.meta.last_pg:
            return pages, f"overflow pages {first}..{first + pages - 1} run past the file's last page"
        return pages, None

    def _check_overlaps(self, runs: list[tuple[int, int, int | None]], problems: list[str],
                        records: dict[int, str]) -> None:
        usage = np.zeros(self.meta.last_pg + 2, np.int64)
        firsts = np.array([r[0] for r in runs], np.int64)
        ends = np.minimum(firsts + np.array([r[1] for r in runs], np.int64), self.meta.last_pg + 1)
        np.add.at(usage, firsts, 1)
        np.add.at(usage, ends, -1)
        shared = np.cumsum(usage) > 1
        if not shared.any():
            return
        problems.append(f"{int(shared.sum())} pages are used twice (by two records or tree pages)")
        for first, end, (_, _, record) in zip(firsts.tolist(), ends.tolist(), runs):
            if record is not None and shared[first:end].any():
                records.setdefault(record, "its pages are also used by another record or tree page")
