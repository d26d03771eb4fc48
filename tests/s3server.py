"""A real S3-compatible HTTP server on localhost (moto's server mode) for the remote-store tests.

It runs in a process of its own, not as a thread of the test's process: a Loader that forks
worker processes would otherwise copy locks the server's thread may hold at that moment (its
log writes), and the server would share the test's GIL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Running:
    endpoint: str
    server: subprocess.Popen

    def stop(self) -> None:
        if self.server.poll() is None:
            self.server.kill()
            self.server.wait(timeout=30)


def _wait_until_listening(port: int, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto_server exited with {server.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"moto_server did not listen on port {port} within {timeout} s")


@contextmanager
def s3_server(bucket: str = "data") -> Iterator[Running]:
    """Start moto's server on a free port with ``bucket`` made; yields its endpoint URL. The AWS
    variables point clients (and the processes this test spawns) at it."""
    import boto3

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running = Running(f"http://127.0.0.1:{port}", server)
    saved = {k: os.environ.get(k) for k in (*S3_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=running.endpoint)
    try:
        _wait_until_listening(port, server)
        boto3.client("s3", endpoint_url=running.endpoint).create_bucket(Bucket=bucket)
        yield running
    finally:
        running.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
