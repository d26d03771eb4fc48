"""A bounded local cache of shard files, shared by the ranks and workers of one node.

Each shard is downloaded once per node: a per-shard lock file (``fcntl.flock``) is held
exclusively while it downloads and shared while a reader has the shard open, so a waiting
process finds the finished file, and eviction skips the shards in use. A download goes to a
``.part`` file, is checked (size and the index's xxh3_64 of the whole file) and only then renamed
into place: no reader ever opens a partial or altered shard. Space is reserved (the ``.part`` is
allocated to the shard's size) under one cache-wide lock before a download starts, evicting the
least recently used shards not in use, so the files on disk never exceed ``limit`` bytes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import RemoteShardError, ShardCacheError

__all__ = ["ShardEntry", "ShardCache", "parse_size"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_CHUNK = 8 << 20


def parse_size(value: int | str | None) -> int | None:
    """Bytes from ``200GB``, ``1.5TiB``, ``4096`` (None: no limit)."""
    if value is None or isinstance(value, int):
        return value
    text = value.strip().upper().replace(" ", "")
    number = text.rstrip("KMGTIB")
    unit = text[len(number):]
    if unit not in _UNITS or not number:
        raise ValueError(f"cache_limit {value!r} is not a size; write it like '200GB', '512MiB' or 4096")
    return int(float(number) * _UNITS[unit])


@dataclass(frozen=True)
class ShardEntry:
    """One shard file of a remote store, as its index describes it."""

    name: str
    nbytes: int
    checksum: str  # hex xxh3_64 of the whole file


@dataclass(frozen=True)
class FetchPolicy:
    """How hard a download is tried: attempts with doubling backoff (seconds), then an error."""

    attempts: int = 3
    backoff: float = 0.25
    # how long a reader waits for other readers to free cache space before it says the cache is
    # too small (a rank stalled on a full cache then fails with that error instead of hanging)
    wait_for_room: float = 60.0
    # how long a process waits for a shard another one holds exclusively (downloading it, which
    # includes its wait for room and its attempts): never forever, so a stall is an error
    wait_for_shard: float = 300.0


class ShardCache:
    """Local copies of the shards of one remote store under ``directory`` (see module doc).

    Args:
        directory: the node's cache folder (shared by every store cached there).
        namespace: the store's sub-folder (a digest of its URL).
        source: the store's URL, to name it in errors.
        fetch: yields the bytes of a shard, from its first byte.
        limit: bytes the cache folder may hold in all (None: no limit).
    """

    def __init__(self, directory: str, namespace: str, source: str,
                 fetch: Callable[[ShardEntry], Iterator[bytes]], limit: int | None,
                 policy: FetchPolicy = FetchPolicy()) -> None:
        self.directory, self.source, self.fetch = directory, source, fetch
        self.folder = os.path.join(directory, namespace)
        self.limit, self.policy = limit, policy
        os.makedirs(self.folder, exist_ok=True)

    # --- names -------------------------------------------------------------------------------
    def path(self, entry: ShardEntry) -> str:
        # the checksum in the name: a re-packed store never reuses an old copy of a shard
        return os.path.join(self.folder, f"{entry.checksum}-{entry.name}")

    def _url(self, entry: ShardEntry) -> str:
        return self.source.rstrip("/") + "/" + entry.name

    # --- use ---------------------------------------------------------------------------------
    def acquire(self, entry: ShardEntry, wait: bool = True) -> tuple[str, int] | None:
        """The shard's local path, downloaded if needed, and a lock fd that keeps it from eviction
        until ``release(fd)``. With ``wait=False`` (prefetching) None when no space is free now."""
        path = self.path(entry)
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline, pause = time.monotonic() + self.policy.wait_for_shard, 0.002
        try:
            while True:
                self.lock(fd, fcntl.LOCK_SH, entry)
                if self._present(path, entry):  # held shared: no one can evict it now
                    os.utime(path)  # least recently used goes first
                    return path, fd
                # One download per node: the first to hold the lock exclusively downloads. Never
                # block on that: the one who downloaded it then pins it (shared), and a process
                # blocked on exclusive behind that pin would wait for as long as it is pinned,
                # which, across ranks waiting on each other in a collective, is forever.
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another downloads it (or holds it, done): look again
                    if time.monotonic() > deadline:
                        raise self._stalled(entry) from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
                    continue
                if not self._present(path, entry) and not self._download(entry, path, wait):
                    _unlock_and_close(fd)
                    return None
                # back to shared (flock drops the lock in between: check again that it is there)
        except BaseException:
            _unlock_and_close(fd)
            raise

    def lock(self, fd: int, kind: int, entry: ShardEntry | None) -> None:
        """``flock(fd, kind)``, waiting at most ``policy.wait_for_shard`` seconds (``entry`` None:
        the cache-wide lock)."""
        deadline, pause = time.monotonic() + self.policy.wait_for_shard, 0.002
        while True:
            try:
                fcntl.flock(fd, kind | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise self._stalled(entry) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def _stalled(self, entry: ShardEntry | None) -> ShardCacheError:
        what = f"shard {entry.name}, which" if entry is not None else "the cache's own lock, which"
        return ShardCacheError(self.directory, f"waited {self.policy.wait_for_shard:.0f} s for {what} "
                               "another process on this node holds (downloading it)", "check that process "
                               "(a stalled download or rank); remove the cache folder if no fastload process runs")

    @staticmethod
    def release(fd: int) -> None:
        _unlock_and_close(fd)

    def prefetch(self, entry: ShardEntry) -> bool:
        """Download the shard if it is missing and space is free now; never waits for space."""
        got = self.acquire(entry, wait=False)
        if got is not None:
            self.release(got[1])
        return got is not None

    @staticmethod
    def _present(path: str, entry: ShardEntry) -> bool:
        try:
            return os.stat(path).st_size == entry.nbytes  # its checksum was checked before the rename
        except FileNotFoundError:
            return False

    # --- space -------------------------------------------------------------------------------
    @contextmanager
    def _cache_lock(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.directory, ".fastload-cache.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self.lock(fd, fcntl.LOCK_EX, None)
            yield
        finally:
            _unlock_and_close(fd)

    def usage(self) -> int:
        """Bytes of the shard files (finished and reserved) in the whole cache folder."""
        return sum(size for _, size, _ in self._files())

    def _files(self) -> list[tuple[str, int, float]]:
        found = []
        for sub in os.scandir(self.directory):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for f in os.scandir(sub.path):
                if f.name.endswith((".lock", ".json", ".tmp")) or not f.is_file(follow_symlinks=False):
                    continue
                try:
                    st = f.stat()
                except FileNotFoundError:
                    continue
                found.append((f.path, st.st_size, st.st_mtime))
        return found

    def _reserve(self, entry: ShardEntry, part: str) -> bool:
        """Under the cache lock: evict unused shards (oldest first) until the shard fits, then
        allocate its ``.part`` file. False when the shards in use leave no room."""
        files = self._files()
        used = sum(size for _, size, _ in files)
        for path, size, _ in sorted(files, key=lambda f: f[2]):
            if self.limit is None or used + entry.nbytes <= self.limit:
                break
            if self._evict(path):
                used -= size
        if self.limit is not None and used + entry.nbytes > self.limit:
            return False
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.posix_fallocate(fd, 0, entry.nbytes)  # a full disk says so now, not mid-download
        except OSError as exc:
            os.close(fd)
            os.remove(part)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ShardCacheError(self.directory, f"the disk is full: shard {entry.name} needs "
                                      f"{entry.nbytes} bytes", "free space there, or give a lower "
                                      "cache_limit or another cache_dir") from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
        else:
            os.close(fd)
        return True

    @staticmethod
    def _evict(path: str) -> bool:
        """Remove a finished shard nobody has open, or a ``.part`` whose downloader died."""
        lock = path[: -len(".part")] if path.endswith(".part") else path
        try:
            fd = os.open(lock + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _unlock_and_close(fd)
            return False  # in use, or downloading
        try:
            os.remove(path)
            return True
        except FileNotFoundError:
            return False
        finally:
            _unlock_and_close(fd)

    def _wait_for_room(self, entry: ShardEntry, part: str, wait: bool) -> bool:
        if self.limit is not None and entry.nbytes > self.limit:
            raise ShardCacheError(self.directory, f"cache_limit {self.limit} bytes is smaller than shard "
                                  f"{entry.name} ({entry.nbytes} bytes)", "raise cache_limit to at least one "
                                  "shard per process reading on this node, plus two")
        deadline, pause = time.monotonic() + self.policy.wait_for_room, 0.01
        while True:
            with self._cache_lock():
                if self._reserve(entry, part):
                    return True
            if not wait:
                return False
            if time.monotonic() > deadline:  # the other readers never let a shard go
                raise ShardCacheError(self.directory, f"no room for shard {entry.name} ({entry.nbytes} bytes): "
                                      f"the shards open on this node fill cache_limit ({self.limit} bytes)",
                                      "raise cache_limit to at least one shard per process reading on this node, plus two")
            time.sleep(pause)  # other readers release shards as they move on
            pause = min(pause * 2, 0.5)

    # --- download ----------------------------------------------------------------------------
    def _download(self, entry: ShardEntry, path: str, wait: bool) -> bool:
        part = path + ".part"
        if not self._wait_for_room(entry, part, wait):
            return False
        try:
            self._fetch_checked(entry, part)
            os.replace(part, path)  # atomic: readers see the whole shard or none
        except BaseException:
            if os.path.exists(part):
                os.remove(part)
            raise
        return True

    def _fetch_checked(self, entry: ShardEntry, part: str) -> None:
        policy, last = self.policy, ""
        for attempt in range(policy.attempts):
            if attempt:
                time.sleep(policy.backoff * 2 ** (attempt - 1))
            try:
                size, digest = self._write(entry, part)
            except ShardCacheError:
                raise
            except Exception as exc:  # the client's errors vary (OSError, botocore, aiohttp)
                last = f"{type(exc).__name__}: {exc}"
                continue
            if size == entry.nbytes and digest == entry.checksum:
                return
            last = (f"the download is {size} bytes with xxh3_64 {digest}, the index says {entry.nbytes} "
                    f"bytes with {entry.checksum} (truncated or altered)")
        raise RemoteShardError(entry.name, self._url(entry), f"{policy.attempts} attempts failed; last: {last}",
                               "check the server and the credentials; if the object was altered, "
                               "re-upload the store (fastload pack ... -o URL --overwrite)")

    def _write(self, entry: ShardEntry, part: str) -> tuple[int, str]:
        import xxhash

        digest, size = xxhash.xxh3_64(), 0
        with open(part, "r+b") as out:
            try:
                for chunk in self.fetch(entry):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if size > entry.nbytes:
                        break  # longer than the index says: no use reading on
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise ShardCacheError(self.directory, f"the disk filled while writing shard {entry.name}",
                                          "free space there, or give a lower cache_limit or another cache_dir") from None
                raise
        return size, digest.hexdigest()


def _unlock_and_close(fd: int) -> None:
    """Unlock, then close a lock file. Closing alone would not free a ``flock``: it belongs to the
    open file, which a process forked meanwhile (a DataLoader worker) shares; that child would
    hold the lock for its whole life. The child forgets inherited lock files without unlocking
    (``remote._Opener.forget``), so unlocking here is always the owner's act."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
