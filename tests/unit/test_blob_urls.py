"""`RECEIVER_BLOB_URL` for S3, and the byte ranges images are served in; pure."""

from __future__ import annotations

import pytest

from receiver.blobs import blobs_from_url
from receiver.blobs.s3 import S3BlobStore
from receiver.errors import ConfigError
from receiver.web.ranges import RangeNotSatisfiable, byte_range


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "endpoint", "region"),
    [
        ("s3://images", "images", "", None, None),
        ("s3://images/kontext/results/", "images", "kontext/results", None, None),
        ("s3://images/p?region=eu-west-1", "images", "p", None, "eu-west-1"),
        (
            "s3://images?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=us-east-1",
            "images",
            "",
            "http://127.0.0.1:9000",
            "us-east-1",
        ),
        ("s3://images?endpoint=https://minio.internal", "images", "", "https://minio.internal", None),
    ],
)
def test_s3_urls(url: str, bucket: str, prefix: str, endpoint: str | None, region: str | None) -> None:
    store = blobs_from_url(url)
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.endpoint, store.region) == (bucket, prefix, endpoint, region)
    assert store.url_of("job.png") == f"s3://{bucket}/{prefix + '/' if prefix else ''}job.png"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://", "s3://bucket"),
        ("s3://key:secret@images", "s3://bucket"),
        ("s3://images?endpont=http://127.0.0.1:9000", "unknown s3:// option"),
        ("s3://images?endpoint=ftp://127.0.0.1", "http"),
        ("s3://images?endpoint=127.0.0.1:9000", "http"),
    ],
)
def test_bad_s3_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        blobs_from_url(url)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 100)),
        ("bytes=100-", (100, 1000)),
        ("bytes=-10", (990, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=990-5000", (990, 1000)),
        ("bytes = 0 - 0", (0, 1)),
        ("bytes=5-2", None),  # not a valid range: ignored, the whole image
        ("bytes=0-1,5-9", None),  # several ranges: the whole image
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_byte_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=1000-", 1000), ("bytes=-0", 1000), ("bytes=-1", 0)])
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, size)
