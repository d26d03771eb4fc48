"""Telling a URL (``s3://``, ``gs://``, ``file://``...) from a local path, and its filesystem.

A URL is never a local path: ``pack -o s3://bucket/x.lmdb`` must not write a folder named
``s3:``. Remote filesystems come from fsspec and its protocol packages (s3fs, gcsfs), imported
only when a URL is used (``_optional.require``), with a message naming the pip extra when one
is missing. Every client gets bounded timeouts and few retries of its own: fastload retries a
shard itself (fastload.stores.cache), and a stopped server must end in an error, never a hang.
"""

from __future__ import annotations

import os
from typing import Any

from .._optional import require
from .registry import url_scheme

__all__ = ["is_url", "filesystem", "join", "protocol", "REMOTE_SCHEMES", "CONNECT_TIMEOUT", "READ_TIMEOUT"]

# The schemes the remote store kind claims in the format registry, and the package and extra
# each needs (any other fsspec protocol works too when its package is installed: ``remote_open``).
_PROTOCOL_PACKAGES = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
                      "gcs": ("gcsfs", "gcs"), "file": ("fsspec", "s3"), "memory": ("fsspec", "s3")}
REMOTE_SCHEMES = tuple(_PROTOCOL_PACKAGES)

# Seconds a client waits to connect, and for the next bytes of a response: a stalled server is
# then an error within a known time (the shard cache retries a few times, then names the shard).
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 15
_CLIENT_RETRIES = 2  # the client's own retries per request (botocore, s3fs); fastload retries on top


def is_url(path: Any) -> bool:
    """True for ``scheme://...`` strings (or PathLikes spelling one)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    return isinstance(path, str) and url_scheme(path) is not None


def protocol(url: str) -> str:
    """``"s3"`` for ``"s3://bucket/x"``."""
    return url.split("://", 1)[0].lower()


def join(url: str, name: str) -> str:
    """``url/name`` (one slash)."""
    return url.rstrip("/") + "/" + name


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    """The fsspec filesystem for ``url`` (endpoint and credentials from ``storage_options`` or,
    as usual for each protocol, the environment: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...)."""
    proto = protocol(url)
    package, extra = _PROTOCOL_PACKAGES.get(proto, (f"the fsspec implementation of {proto}://", "s3"))
    fsspec = require("fsspec", extra, f"stores at {proto}:// URLs")
    if proto in _PROTOCOL_PACKAGES:
        require(package, extra, f"stores at {proto}:// URLs")
    options = dict(storage_options or {})
    retries = options.pop("retries", _CLIENT_RETRIES) if proto in ("s3", "s3a") else None
    if proto in ("s3", "s3a"):
        options = _s3_defaults(options)
    try:
        fs = fsspec.filesystem(proto, **options)
    except ImportError:
        from ..errors import MissingExtraError

        raise MissingExtraError(package, extra, f"stores at {proto}:// URLs") from None
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise ValueError(f"{url}: fsspec knows no filesystem for {proto}:// ({exc})") from None
    if retries is not None:
        fs.retries = retries  # s3fs retries 5 times with backoff by default: bound it
    return fs


def _s3_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """Bounded timeouts and few client-side retries (see the module doc)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_url" not in options and "endpoint_url" not in options.get("client_kwargs", {}):
        options["endpoint_url"] = endpoint  # older botocore ignores the variable: pass it on
    config = dict(options.get("config_kwargs", {}))
    config.setdefault("connect_timeout", CONNECT_TIMEOUT)
    config.setdefault("read_timeout", READ_TIMEOUT)
    config.setdefault("retries", {"max_attempts": _CLIENT_RETRIES, "mode": "standard"})
    options["config_kwargs"] = config
    options.setdefault("skip_instance_cache", True)  # a fresh client per store: no state shared across forks
    return options
