"""The contract suites run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from tests.services import postgres_url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def postgres_schemas() -> AsyncIterator[Callable[[], str]]:
    """Makes URLs of the test PostgreSQL server, each with a `?schema=` of its own; drops them afterwards.

    Skips without a server, or fails with `CI=true` (see `tests.services`)."""
    import asyncpg

    url = postgres_url()
    schemas: list[str] = []

    def new_schema_url() -> str:
        schemas.append(f"test_{uuid.uuid4().hex[:20]}")
        parts = urlsplit(url)
        return parts._replace(query=urlencode([*parse_qsl(parts.query), ("schema", schemas[-1])])).geturl()

    yield new_schema_url
    conn = await asyncpg.connect(url)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def postgres_schema_url(postgres_schemas: Callable[[], str]) -> str:
    """A URL of the test PostgreSQL server with a schema of this test's own."""
    return postgres_schemas()
