"""Test-wide set-up: structured logs at warning level, so a failure's output shows what matters; the
S3 server for the tests that ask for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from receiver.logs import configure_logging
from tests.s3 import S3Server, moto_server

configure_logging("warning", json=False)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """moto's S3 server on loopback, once per session (see `tests.s3`)."""
    with moto_server() as server:
        yield server
