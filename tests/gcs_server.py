"""A real Google Cloud Storage endpoint on 127.0.0.1 for tests: gcp-storage-emulator's server, started
and stopped by a fixture (the S3 one is tests/s3_server.py)."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Iterator

import pytest


@dataclass(frozen=True)
class GCSEndpoint:
    url: str
    bucket: str

    @property
    def storage_options(self) -> dict:
        return {"endpoint_url": self.url, "token": "anon", "project": "hellomeme-test"}

    def cli_options(self) -> list[str]:
        return ["--storage-option", f"endpoint_url={self.url}", "--storage-option", "token=anon",
                "--storage-option", "project=hellomeme-test"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def gcs_endpoint() -> Iterator[GCSEndpoint]:
    pytest.importorskip("gcsfs")
    server_module = pytest.importorskip("gcp_storage_emulator.server")
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    port = _free_port()
    server = server_module.create_server("127.0.0.1", port, in_memory=True, default_bucket="memes")
    server.start()
    try:
        yield GCSEndpoint(url=f"http://127.0.0.1:{port}", bucket="memes")
    finally:
        server.stop()
