"""Group commit: writes that queue up while one commits share the next transaction, and one that fails
is rolled back alone."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from receiver.stores.sqlite_writer import WriterThread


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[tuple[WriterThread, list[str]]]:
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    commits: list[str] = []
    conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    writer = WriterThread(conn)
    yield writer, commits
    writer.stop()
    conn.close()


def insert(n: int) -> object:
    return lambda conn: conn.execute("INSERT INTO t (n) VALUES (?)", (n,)).lastrowid


@pytest.mark.anyio
async def test_queued_writes_share_one_commit(writer: tuple[WriterThread, list[str]]) -> None:
    thread, commits = writer
    holding, gate = threading.Event(), threading.Event()
    results: list[object] = []
    queued: list[int] = []
    all_queued = anyio.Event()

    async def write(n: int) -> None:
        queued.append(n)
        if len(queued) == 50:
            all_queued.set()
        results.append(await thread.run(insert(n)))  # type: ignore[arg-type]  # queued before it awaits

    async with anyio.create_task_group() as tg:
        # The first write holds the writer until every other one is queued behind it.
        def hold(conn: sqlite3.Connection) -> bool:
            holding.set()
            return gate.wait(10)

        tg.start_soon(thread.run, hold)
        assert await anyio.to_thread.run_sync(holding.wait, 10)
        for n in range(1, 51):
            tg.start_soon(write, n)
        await all_queued.wait()
        gate.set()
    assert sorted(results) == list(range(1, 51))  # type: ignore[type-var]
    assert len(commits) == 2  # the first write's transaction, then all 50 together


@pytest.mark.anyio
async def test_a_failing_write_is_rolled_back_alone(writer: tuple[WriterThread, list[str]]) -> None:
    thread, _ = writer
    await thread.run(insert(1))  # type: ignore[arg-type]
    outcomes: dict[int, object] = {}

    async def write(n: int) -> None:
        try:
            outcomes[n] = await thread.run(insert(n))  # type: ignore[arg-type]
        except sqlite3.IntegrityError as exc:
            outcomes[n] = exc

    async with anyio.create_task_group() as tg:
        for n in (2, 1, 3):  # 1 exists already
            tg.start_soon(write, n)
    assert isinstance(outcomes.pop(1), sqlite3.IntegrityError)
    assert outcomes == {2: 2, 3: 3}
    rows = await thread.run(lambda conn: conn.execute("SELECT n FROM t ORDER BY n").fetchall())
    assert rows == [(1,), (2,), (3,)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
