"""Positioned reads of a read-only file: never a memory map, so a short or damaged file gives an
error instead of a SIGBUS, whatever offset a damaged index points to."""

from __future__ import annotations

import os
import threading

__all__ = ["ReadOnlyFile", "ShortReadError"]


class ShortReadError(OSError):
    """The file ends before the bytes asked for (it is shorter than its own metadata says)."""


class ReadOnlyFile:
    """One file descriptor with ``read(offset, size)``; safe to share between threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd = os.open(path, flags)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such store") from None
        self.size = os.fstat(self.fd).st_size
        self._lock = None if hasattr(os, "pread") else threading.Lock()  # Windows: seek + read

    def _pread(self, offset: int, size: int) -> bytes:
        with self._lock:  # type: ignore[union-attr]
            os.lseek(self.fd, offset, os.SEEK_SET)
            return os.read(self.fd, size)

    def read(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``; ``ShortReadError`` if the file ends first."""
        data = os.pread(self.fd, size, offset) if self._lock is None else self._pread(offset, size)
        if len(data) == size:
            return data
        while len(data) < size:  # short reads are legal (network file systems); EOF gives b""
            more = (os.pread(self.fd, size - len(data), offset + len(data)) if self._lock is None
                    else self._pread(offset + len(data), size - len(data)))
            if not more:
                raise ShortReadError(f"{self.path}: bytes {offset:,}..{offset + size:,} asked for, "
                                     f"the file ends at {offset + len(data):,}")
            data += more
        return data

    def read_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes at ``offset`` (no intermediate copy where ``os.preadv``
        exists); ``ShortReadError`` if the file ends first."""
        if self._lock is not None or not hasattr(os, "preadv"):
            out[:] = self.read(offset, len(out))
            return
        done = 0
        while done < len(out):  # short reads are legal (network file systems); EOF gives 0
            got = os.preadv(self.fd, [out[done:]], offset + done)
            if not got:
                raise ShortReadError(f"{self.path}: bytes {offset:,}..{offset + len(out):,} asked for, "
                                     f"the file ends at {offset + done:,}")
            done += got

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
