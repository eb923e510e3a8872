"""A real S3 endpoint on 127.0.0.1 for tests: moto's server, started and stopped by a fixture."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import pytest

CANARY_SECRET = "canary-secret-0f3c9a"


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    bucket: str
    key: str
    secret: str

    @property
    def storage_options(self) -> dict:
        return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": self.url}}

    def cli_options(self) -> list[str]:
        return ["--storage-option", f"client_kwargs.endpoint_url={self.url}",
                "--storage-option", f"key={self.key}", "--storage-option", f"secret={self.secret}"]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[S3Endpoint]:
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server._server.server_address
        endpoint = S3Endpoint(url=f"http://{host}:{port}", bucket="memes", key="AKIATESTKEY", secret=CANARY_SECRET)
        boto3.client("s3", endpoint_url=endpoint.url, aws_access_key_id=endpoint.key,
                     aws_secret_access_key=endpoint.secret, region_name="us-east-1").create_bucket(Bucket="memes")
        yield endpoint
    finally:
        server.stop()
