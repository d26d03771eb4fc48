"""Stores in object storage (any fsspec URL), read through a bounded local shard cache.

A remote store is a folder-like prefix holding shard files and, written last, ``index.json``:
for each shard its name, size, xxh3_64 of the whole file, header and labels. Opening one reads
only the index, so the Loader can plan epochs (labels, counts, classes) before any shard is
downloaded; a shard is fetched into the cache (fastload.stores.cache) when first read, or ahead
of need by a Prefetcher that follows the epoch's plan.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..codecs.base import Window
from ..errors import RemoteShardError, StoreFormatError
from .base import StoreReader
from .cache import FetchPolicy, ShardCache, ShardEntry, parse_size
from .format import StoreHeader
from .metadata import MetadataColumn
from .registry import Match, StoreFormat
from .sharded import ShardedStore
from .source import HeaderFacts
from .urls import REMOTE_SCHEMES, filesystem, join

__all__ = ["INDEX_NAME", "RemoteStore", "Prefetcher", "remote_format", "start_prefetch", "default_cache_dir",
           "shard_sizes_for_shuffle"]

INDEX_NAME = "index.json"
INDEX_MAGIC = "fastload-remote-index"
INDEX_VERSION = 1
_CHUNK = 8 << 20

OpenLocal = Callable[[str, bool], StoreReader]


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastload", "shards")


def read_index(fs: Any, url: str) -> dict[str, Any]:
    """The store's index, checked; a missing one means no finished upload is there."""
    where = join(url, INDEX_NAME)
    try:
        with fs.open(where, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no fastload store here ({INDEX_NAME} is missing: nothing was packed "
                                "to this URL, or its upload did not finish); pack with: fastload pack DATA -o "
                                f"{url}") from None
    except ValueError:
        raise StoreFormatError(where, "is not valid JSON; re-upload the store") from None
    if not isinstance(data, dict) or data.get("magic") != INDEX_MAGIC:
        raise StoreFormatError(where, "is not a fastload remote-store index")
    if data.get("version", 0) > INDEX_VERSION:
        raise StoreFormatError(where, f"index version {data.get('version')} is newer than this fastload reads; "
                               "upgrade fastload: pip install -U fastload")
    if not data.get("shards"):
        raise StoreFormatError(where, "lists no shards")
    return data


class _RemoteShard(HeaderFacts):
    """One shard as the index describes it; records are read from its cached local copy. Not a
    ``RecordSource``: its labels and shapes come from the index, where a source would read its
    table (a download); what the header answers it shares with every source (``HeaderFacts``)."""

    def __init__(self, store: RemoteStore, number: int, info: dict[str, Any]) -> None:
        self._store, self.number = store, number
        self.entry = ShardEntry(info["name"], int(info["bytes"]), info["xxh3_64"])
        self.path = join(store.url, self.entry.name)
        self.header = StoreHeader.from_json(json.dumps(info["header"]), self.path)
        self._labels = np.asarray(info["labels"], dtype=np.int64)
        if len(self._labels) != self.header.count:
            raise StoreFormatError(self.path, f"the index lists {len(self._labels)} labels for {self.header.count} records")

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def metadata_columns(self) -> tuple[MetadataColumn, ...]:
        return self.header.columns(self.path)

    @property
    def problems(self) -> list[str]:
        return self._reader().problems

    def _reader(self) -> StoreReader:
        return self._store._opener().reader(self)

    # the hot paths, delegated by hand; the rest (table, metadata, paths...) by __getattr__
    def read(self, index: int, verify: bool = True) -> bytes:
        return self._reader().read(index, verify)

    def read_into(self, index: int, out: memoryview, verify: bool = True) -> int:
        return self._reader().read_into(index, out, verify)

    def get(self, index: int) -> tuple[bytes | np.ndarray, int]:
        return self._reader().get(index)

    def decode(self, index: int, window: Window | None = None, *, into: np.ndarray | None = None,
               verify: bool = True) -> np.ndarray:
        return self._reader().decode(index, window, into=into, verify=verify)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_store", "entry", "header"):
            raise AttributeError(name)
        return getattr(self._reader(), name)

    def close(self) -> None:
        self._store._opener().close_shard(self.number)

    def __repr__(self) -> str:
        return f"RemoteShard({self.path!r})"


class _Opener:
    """The shards this process has open (at most ``max_open``). Only the shard being read is
    pinned in the cache (its lock held shared): a process waiting for cache space then pins
    nothing, so ranks that wait on each other (a collective) cannot wait on each other's space
    too. A reader left open unpinned is checked when it is read again, and closed as soon as the
    cache evicted its file (its inode then differs or is gone)."""

    def __init__(self, store: RemoteStore) -> None:
        self.store, self.pid = store, os.getpid()
        self.open: OrderedDict[int, tuple[StoreReader, int, int]] = OrderedDict()  # reader, lock fd, inode
        self.current: int | None = None
        self.lock = threading.Lock()

    def reader(self, shard: _RemoteShard) -> StoreReader:
        with self.lock:
            if self.current == shard.number:
                return self.open[shard.number][0]
            self._unpin()
            got = self.open.get(shard.number)
            if got is not None and self._repin(shard, got):
                self.open.move_to_end(shard.number)
            else:
                if got is not None:
                    self._close(shard.number)
                while len(self.open) >= self.store.max_open:
                    self._close(next(iter(self.open)))
                self._open(shard)
            self.current = shard.number
            self._drop_evicted()
            return self.open[shard.number][0]

    def _open(self, shard: _RemoteShard) -> None:
        path, fd = self.store.cache.acquire(shard.entry)  # type: ignore[misc]
        try:
            reader = self.store.open_local(path, self.store.strict)
            reader.header  # noqa: B018 - open and check now
            self.open[shard.number] = (reader, fd, os.stat(path).st_ino)
        except BaseException:
            ShardCache.release(fd)
            raise

    def _repin(self, shard: _RemoteShard, got: tuple[StoreReader, int, int]) -> bool:
        self.store.cache.lock(got[1], fcntl.LOCK_SH, shard.entry)
        try:
            return os.stat(self.store.cache.path(shard.entry)).st_ino == got[2]
        except FileNotFoundError:
            return False

    def _unpin(self) -> None:
        if self.current is not None and self.current in self.open:
            fcntl.flock(self.open[self.current][1], fcntl.LOCK_UN)
        self.current = None

    def _drop_evicted(self) -> None:
        for number in [n for n in self.open if n != self.current]:
            try:
                same = os.stat(self.store.cache.path(self.store.shards[number].entry)).st_ino == self.open[number][2]
            except FileNotFoundError:
                same = False
            if not same:  # evicted by another process: let its disk space go
                self._close(number)

    def _close(self, number: int) -> None:
        reader, fd, _ = self.open.pop(number)
        if self.current == number:
            self.current = None
        reader.close()
        ShardCache.release(fd)

    def close_shard(self, number: int) -> None:
        with self.lock:
            if number in self.open:
                self._close(number)

    def forget(self) -> None:
        """In a forked child: drop the parent's readers and lock fds (the parent keeps its own)."""
        for _, fd, _ in self.open.values():
            os.close(fd)
        self.open.clear()
        self.current = None


class RemoteStore(ShardedStore):
    """A store at a URL (``s3://bucket/train.lmdb``), read through a bounded local cache.

    Args:
        url: where ``fastload pack -o URL`` put it.
        cache_dir: the node's shard cache (default ``~/.cache/fastload/shards``).
        cache_limit: bytes the cache may hold ("200GB"); None: no limit.
        storage_options: fsspec options (endpoint_url, key, secret...); by default the
            protocol's usual environment (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``...).
        prefetch: shards downloaded ahead of the one being read.
        max_open: shards each process keeps open at once (only the one being read is pinned);
            default: every shard when the cache holds them all (a full shuffle then never
            reopens one), else 4 (an open file keeps its disk space after eviction).
        policy: download attempts and the bounded waits (a FetchPolicy, or its fields as a dict).
        index_file: a local copy of the index (what another process of this node opens the store
            from: it then needs no request, nor the client, while its shards are cached).
        open_local: ``open_local(path, strict)`` opens a cached shard file (the format registry's
            ``open_store`` for one path, which the package hands in: this module imports no registry).
    """

    def __init__(self, url: str, *, cache_dir: str | os.PathLike[str] | None = None,
                 cache_limit: int | str | None = None, storage_options: dict[str, Any] | None = None,
                 strict: bool = True, prefetch: int = 2, max_open: int | None = None,
                 policy: FetchPolicy | dict[str, Any] | None = None, index: dict[str, Any] | None = None,
                 open_local: OpenLocal | None = None, index_file: str | None = None) -> None:
        if open_local is None:
            raise TypeError("RemoteStore needs open_local: open stores at URLs with fastload.open_store(URL)")
        self.url, self.open_local = url.rstrip("/"), open_local
        self.storage_options = dict(storage_options or {})
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_limit, self.strict = parse_size(cache_limit), strict
        if not isinstance(policy, FetchPolicy):
            policy = FetchPolicy(**(policy or {}))
        self.prefetch, self.policy = prefetch, policy
        self.max_open = 0 if max_open is None else max(1, max_open)  # set once the shards are known
        self._fs: tuple[int, Any] | None = None
        if index is None and index_file is not None:
            with open(index_file, "rb") as f:
                index = json.loads(f.read())
        self._index = index if index is not None else read_index(self.fs, self.url)
        os.makedirs(self.cache_dir, exist_ok=True)
        namespace = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.cache = ShardCache(self.cache_dir, namespace, self.url, self._fetch, self.cache_limit, policy)
        self.index_file = index_file or self._keep_index()
        self._openers: tuple[int, _Opener] | None = None
        super().__init__([_RemoteShard(self, i, info) for i, info in enumerate(self._index["shards"])])
        if max_open is None:
            self.max_open = len(self.shards) if self.cache_holds_all else 4
        self.path = self.url

    @property
    def fs(self) -> Any:
        """This process's fsspec filesystem (a forked child makes its own client)."""
        if self._fs is None or self._fs[0] != os.getpid():
            self._fs = (os.getpid(), filesystem(self.url, self.storage_options))
        return self._fs[1]

    def _opener(self) -> _Opener:
        if self._openers is None or self._openers[0] != os.getpid():
            if self._openers is not None:
                self._openers[1].forget()
            self._openers = (os.getpid(), _Opener(self))
        return self._openers[1]

    def _fetch(self, entry: ShardEntry) -> Iterator[bytes]:
        with self.fs.open(join(self.url, entry.name), "rb", block_size=_CHUNK) as f:
            while chunk := f.read(_CHUNK):
                yield chunk

    @property
    def entries(self) -> list[ShardEntry]:
        return [s.entry for s in self.shards]

    @property
    def shard_counts(self) -> list[int]:
        return [len(s) for s in self.shards]

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    @property
    def cache_holds_all(self) -> bool:
        """Whether every shard fits in the cache at once (then any order reads well)."""
        return self.cache_limit is None or self.cache_limit >= self.nbytes

    def record_shapes(self) -> np.ndarray:
        """From the index (no shard is downloaded to plan a pipeline); older indexes: the shards'."""
        if all("shapes" in info for info in self._index["shards"]):
            return np.concatenate([np.asarray(info["shapes"], np.int64).reshape(-1, 3) for info in self._index["shards"]])
        return super().record_shapes()

    def record_nbytes(self) -> np.ndarray:
        """From the index, as ``record_shapes``."""
        if all("nbytes" in info for info in self._index["shards"]):
            return np.concatenate([np.asarray(info["nbytes"], np.int64).reshape(-1) for info in self._index["shards"]])
        return super().record_nbytes()

    def _keep_index(self) -> str:
        """Write the index into the cache folder (atomically) and return its path."""
        data = json.dumps(self._index).encode()
        path = os.path.join(self.cache.folder, f"index-{hashlib.sha256(data).hexdigest()[:16]}.json")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        return path

    def reopen_args(self) -> tuple[list[str], dict[str, Any]]:
        """The URL and the cache settings: another process (a DALI feed worker) opens the same
        store through the same node cache, never a shard's URL as a store of its own."""
        return [self.url], {"cache_dir": self.cache_dir, "cache_limit": self.cache_limit,
                            "storage_options": self.storage_options, "prefetch": 0, "max_open": self.max_open,
                            "policy": dataclasses.asdict(self.policy), "index_file": self.index_file}

    def shard_of(self, records: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self._starts), np.asarray(records), side="right") - 1

    def close(self) -> None:
        if self._openers is not None and self._openers[0] == os.getpid():
            opener = self._openers[1]
            with opener.lock:
                for number in list(opener.open):
                    opener._close(number)

    def __getstate__(self) -> dict[str, Any]:
        # a spawned torch worker rebuilds the store from its settings and the index already read
        # (the function that opens local shards goes by its name)
        paths, options = self.reopen_args()
        return {"url": paths[0], "options": {**options, "strict": self.strict, "prefetch": self.prefetch,
                                              "index": self._index, "open_local": self.open_local}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], **state["options"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"RemoteStore({self.url!r}, cache_dir={self.cache_dir!r}, cache_limit={self.cache_limit})"


def remote_format(open_local: OpenLocal) -> StoreFormat:
    """The remote store kind, a plugin of the format registry: it claims the URL schemes, so a
    URL is never sniffed on the local disk (never taken for a folder named "s3:"); its cached
    shard files are opened by ``open_local(path, strict)``."""

    def open_remote(url: str, *, strict: bool = True, **options: Any) -> RemoteStore:
        return RemoteStore(url, strict=strict, open_local=open_local, **options)

    return StoreFormat(name="remote", extensions=(), recognise=lambda path: Match.NONE, open=open_remote,
                       schemes=REMOTE_SCHEMES, misnamed="a URL of no fastload store")


class Prefetcher:
    """Downloads the shards a pass will read, in the order it first needs them, at most
    ``store.prefetch`` shards ahead of the batch being consumed (``advance``)."""

    def __init__(self, store: RemoteStore, batches: Sequence[np.ndarray]) -> None:
        self.store = store
        need: dict[int, int] = {}
        for position, batch in enumerate(batches):
            for shard in np.unique(store.shard_of(np.asarray(batch))).tolist():
                need.setdefault(int(shard), position)
        self.order = sorted(need, key=need.__getitem__)
        self.need = [need[s] for s in self.order]
        self.position, self.stopped = 0, False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="fastload-prefetch", daemon=True)
        self.thread.start()

    def advance(self, position: int) -> None:
        with self.changed:
            self.position = position
            self.changed.notify()

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify()

    def _allowed(self) -> int:
        started = int(np.searchsorted(self.need, self.position, side="right"))
        return started + self.store.prefetch

    def _run(self) -> None:
        k = 0
        while k < len(self.order):
            with self.changed:
                while not self.stopped and k >= self._allowed():
                    self.changed.wait()
                if self.stopped:
                    return
            try:
                done = self.store.cache.prefetch(self.store.shards[self.order[k]].entry)
            except (RemoteShardError, OSError, ValueError):
                return  # the reader fetches it again itself, and reports the failure
            if not done:  # no free space now: try again when the reader moves on
                with self.changed:
                    seen = self.position
                    while not self.stopped and self.position == seen:
                        self.changed.wait()
                continue
            k += 1


def start_prefetch(store: Any, batches: Sequence[np.ndarray]) -> Prefetcher | None:
    """A Prefetcher for a remote store's pass over ``batches``; None for other stores."""
    if not isinstance(store, RemoteStore) or store.prefetch < 1 or not batches:
        return None
    return Prefetcher(store, batches)


def shard_sizes_for_shuffle(store: Any) -> tuple[int, ...] | None:
    """Records per shard for the shard-aware shuffle (fastload.sampling.shard_window_order): for a remote store
    whose cache cannot hold every shard; None otherwise (a full permutation then reads well)."""
    if not isinstance(store, RemoteStore) or store.cache_holds_all:
        return None
    return tuple(store.shard_counts)
