"""moto's S3 server (`ThreadedMotoServer`) on a free loopback port, for the tests that need S3.

It is started by the tests themselves, so it is always there where the dev dependencies are; should
moto be missing, the rule of `tests.services` applies (fail with `CI=true`, else skip).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

REGION = "us-east-1"
# What the receiver's S3 client reads. The metadata endpoint is a trap on a loopback address nobody
# serves: should the client ever look for an instance profile, it never leaves the machine.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "AWS_REGION": REGION,
    "AWS_METADATA_ENDPOINT": "http://127.0.0.2:9",
}


@dataclass
class S3Server:
    endpoint: str
    client: Any  # boto3's S3 client, to look into the buckets

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:20]}"
        self.client.create_bucket(Bucket=name)
        return name

    def url(self, bucket: str, prefix: str = "images") -> str:
        return f"s3://{bucket}/{prefix}?endpoint={quote(self.endpoint, safe='')}&region={REGION}"

    def keys(self, bucket: str) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def incomplete_uploads(self, bucket: str) -> list[str]:
        listed = self.client.list_multipart_uploads(Bucket=bucket)
        return sorted(upload["Key"] for upload in listed.get("Uploads", []))

    def read(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """The server, and the `AWS_*` variables pointing every S3 client of this process at its account."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        reason = f"moto[server] is not installed ({exc.name}); pip install -e '.[dev]'"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        try:
            yield S3Server(endpoint, client)
        finally:
            server.stop()
