"""One root exception for fastload, with subclasses that carry the facts a user acts on."""

from __future__ import annotations

__all__ = [
    "FastloadError",
    "MissingExtraError",
    "BadInputError",
    "StoreFormatError",
    "StoreExistsError",
    "CorruptStoreError",
    "CorruptRecordError",
    "PackError",
    "WorkerDiedError",
    "WorkerError",
    "FoldsError",
    "RemoteShardError",
    "ShardCacheError",
]


class FastloadError(Exception):
    """Root of every error fastload raises on purpose."""


class MissingExtraError(FastloadError, ImportError):
    """A package fastload imports when first needed (DALI, CuPy, pydicom, lmdb, ...) is not installed.

    ``extra`` is the pip extra of fastload that installs it, or None for one of fastload's own
    dependencies (lmdb, h5py): the message then names the package itself.
    """

    def __init__(self, module: str, extra: str | None, purpose: str) -> None:
        self.module = module
        self.extra = extra
        install = f'pip install "fastload[{extra}]"' if extra else f"pip install {module} (a dependency of fastload)"
        super().__init__(f"{purpose} needs the '{module}' package, which is not installed. Install it with: {install}")


class BadInputError(FastloadError, ValueError):
    """An input file cannot be packed (not an image, truncated, too large, ...)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class StoreFormatError(FastloadError, ValueError):
    """A path is not a fastload store, or one this version cannot read."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class StoreExistsError(FastloadError, FileExistsError):
    """The pack target exists and overwriting was not asked for."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")


class CorruptStoreError(FastloadError, ValueError):
    """A store's file is damaged (truncated, overwritten, bits flipped): found while opening it,
    reading it, or by ``fastload verify``. ``CorruptRecordError`` is the case of one record."""

    def __init__(self, store: str, reason: str, advice: str | None = None) -> None:
        self.store = store
        self.reason = reason
        if advice is None:
            advice = (f"re-copy the store from its source (or re-pack it), then run "
                      f"'fastload verify {store}'")
        super().__init__(f"{store}: damaged store: {reason}; {advice}")


class CorruptRecordError(CorruptStoreError):
    """A stored record fails its checksum, cannot be found or read, or cannot be decoded."""

    def __init__(self, store: str, index: int, source: str | None, reason: str) -> None:
        self.index = index
        self.source = source
        origin = f" (packed from {source})" if source else ""
        self.store = store
        self.reason = reason
        FastloadError.__init__(
            self,
            f"{store}: record {index}{origin} is corrupt: {reason}. "
            f"Run 'fastload verify {store}' to list every bad record, then re-pack.",
        )


class PackError(FastloadError, RuntimeError):
    """Packing failed as a whole (strict mode, disk full, nothing to pack)."""


class SampleShapeError(FastloadError, ValueError):
    """A sample came out of the augment ops in another shape or type than the rest of its batch."""


class WorkerDiedError(FastloadError, RuntimeError):
    """A worker process died (killed, out of memory) instead of returning a result."""


class WorkerError(FastloadError, RuntimeError):
    """A worker process raised an error that is neither fastload's nor Python's own (a
    library's); its type, message and traceback are in the message."""


class FoldsError(FastloadError, ValueError):
    """Cross-validation folds cannot be made as asked, or do not belong to the given store."""


class RemoteShardError(FastloadError, OSError):
    """A shard of a store in object storage could not be fetched whole (after retries)."""

    def __init__(self, shard: str, url: str, reason: str, advice: str) -> None:
        self.shard, self.url, self.reason = shard, url, reason
        super().__init__(f"shard {shard} at {url}: {reason}; {advice}")


class ShardCacheError(FastloadError, OSError):
    """The local shard cache cannot hold what is needed (its limit, or its disk, is full)."""

    def __init__(self, directory: str, reason: str, advice: str) -> None:
        self.directory = directory
        super().__init__(f"shard cache {directory}: {reason}; {advice}")
