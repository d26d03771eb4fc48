"""Shared-memory slots between a parent and the worker processes it starts.

A slot is an anonymous memfd the workers inherit (``spawn(..., pass_fds=...)``, its fds named on
their command line): nothing appears in ``/dev/shm`` and nothing outlives the processes that map
it, however they end. The parent grows a slot before a request needs more (the request carries
the capacity: a worker maps the slot again when it grew). Used by the DALI feed (``pool``) and the
host stage's processes (``host_pool``).
"""

from __future__ import annotations

import argparse
import mmap
import os
from collections.abc import Sequence
from typing import Any

from .channel import read_message
from .process import WorkerProcess, stop, worker_stdio

__all__ = ["ALIGN", "Slot", "SlotMaps", "align", "close_slots", "start_slot_worker"]

_GROW = 1 << 20
ALIGN = 64  # bytes: where each part of a slot starts (a cache line; SIMD loads stay aligned)


def align(n: Any) -> Any:
    """``n`` bytes rounded up to a multiple of ``ALIGN`` (an int, or a NumPy array of them)."""
    return -(-n // ALIGN) * ALIGN


class Slot:
    """One memfd, mapped in the parent on demand."""

    def __init__(self, name: str) -> None:
        self.fd = os.memfd_create(name, 0)
        self.capacity = 0
        self.map: mmap.mmap | None = None

    def reserve(self, size: int) -> int:
        """Grow to hold ``size`` bytes (by a quarter at least, in MiB); returns the capacity."""
        if size > self.capacity:
            self.capacity = -(-max(size, int(self.capacity * 1.25)) // _GROW) * _GROW
            os.ftruncate(self.fd, self.capacity)
            self.map = None  # views of the old mapping keep it alive while they are used
        return self.capacity

    def view(self) -> memoryview:
        """The parent's view of the slot (valid until the slot is reserved larger)."""
        if self.map is None:
            self.map = mmap.mmap(self.fd, self.capacity)
        return memoryview(self.map)


def close_slots(owner: int, workers: Sequence[WorkerProcess], slots: Sequence[Slot]) -> None:
    """Stop ``workers`` and close ``slots``: a finalizer's work, in the process ``owner`` only (a
    forked child's copies are not its to stop)."""
    if os.getpid() != owner:
        return
    stop(list(workers))
    for slot in slots:
        try:
            os.close(slot.fd)
        except OSError:
            pass


class SlotMaps:
    """A worker's mappings of its slots, each made once (again when the parent grew the slot)."""

    def __init__(self, fds: Sequence[int]) -> None:
        self.fds = list(fds)
        self.maps: dict[int, mmap.mmap] = {}

    def get(self, slot: int, capacity: int) -> mmap.mmap:
        current = self.maps.get(slot)
        if current is None or len(current) < capacity:
            current = self.maps[slot] = mmap.mmap(self.fds[slot], capacity)
        return current


def start_slot_worker(argv: list[str] | None, description: str) -> tuple[int, int, list[int], bytes] | None:
    """In a slot worker: ``(requests fd, replies fd, slot fds, spec)`` from its command line
    (``--slots FD,FD,...``) and the spec message the parent sends first; None when the parent
    closed the pipe before sending it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--slots", required=True, help="comma-separated shared-memory fds")
    args = parser.parse_args(argv)
    inp, out = worker_stdio(die_with_parent=True)
    ok, spec = read_message(inp)
    return (inp, out, [int(v) for v in args.slots.split(",") if v], spec) if ok else None
