"""A thread pool started when first used, and again in a forked child (threads do not survive a
fork: a pool inherited from the parent would wait forever)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["LazyThreadPool"]


class LazyThreadPool:
    """Args:
        threads: the pool's threads.
        name: the threads' name prefix.
        initializer: run once in each thread as it starts.
    """

    def __init__(self, threads: int, name: str, initializer: Callable[[], None] | None = None) -> None:
        self.threads, self._name, self._initializer = threads, name, initializer
        self._pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool)

    def get(self) -> ThreadPoolExecutor:
        """The pool of this process, started now if needed."""
        if self._pool is None or self._pool[0] != os.getpid():
            pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self._name, initializer=self._initializer)
            self._pool = (os.getpid(), pool)
        return self._pool[1]

    def close(self) -> None:
        """Let the threads go (a later ``get`` starts a new pool)."""
        if self._pool is not None:
            pid, pool = self._pool
            self._pool = None
            if pid == os.getpid():
                pool.shutdown(wait=False)
