"""A real S3-compatible HTTP server on localhost (moto's server mode) for the remote-store tests."""

from __future__ import annotations

import os
import socket
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
    server: object

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def s3_server(bucket: str = "data") -> Iterator[Running]:
    """Start moto's ThreadedMotoServer on a free port with ``bucket`` made; yields its endpoint URL.
    The AWS variables point clients (and the processes this test spawns) at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (*S3_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield Running(endpoint, server)
    finally:
        try:
            server.stop()
        except Exception:  # already stopped by the test
            pass
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
