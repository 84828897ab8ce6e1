"""`stores.guard`: which failures of a store call become `StoreUnavailable` (a 503), and which stay."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from receiver.errors import StoreUnavailable
from receiver.stores.guard import guarded
from receiver.stores.postgres import PostgresStore

pytestmark = pytest.mark.anyio


class Raising:
    """A store whose one call raises what it is given, and says which errors mean "unreachable" as
    the PostgreSQL store does."""

    unavailable_errors = PostgresStore.unavailable_errors

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error

    async def get(self, job_id: str) -> str:
        if self.error is not None:
            raise self.error
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError(),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    ],
)
async def test_a_broken_connection_is_the_store_being_unavailable(error: BaseException) -> None:
    with pytest.raises(StoreUnavailable):
        await guarded(Raising(error), 5).get("job")  # type: ignore[arg-type]


async def test_a_call_past_the_deadline_is_the_store_being_unavailable() -> None:
    with pytest.raises(StoreUnavailable, match=r"within 0\.01 s"):
        await guarded(Raising(), 0.01).get("job")  # type: ignore[arg-type]


async def test_any_other_error_is_left_as_it_is() -> None:
    with pytest.raises(KeyError):
        await guarded(Raising(KeyError("job")), 5).get("job")  # type: ignore[arg-type]
