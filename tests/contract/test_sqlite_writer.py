"""Group commit: writes that queue up while one commits share the next transaction, and one that fails
is rolled back alone; a commit is made durable after the write lock is let go, before it is answered."""

from __future__ import annotations

import fcntl
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


@pytest.mark.anyio
async def test_a_commit_is_synced_outside_the_lock_before_it_is_answered(tmp_path: Path) -> None:
    path, lock_path = tmp_path / "db.sqlite", tmp_path / "db.sqlite-writer.lock"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    seen: list[tuple[list[tuple[int]], bool]] = []

    def sync() -> None:
        with sqlite3.connect(path) as other, open(lock_path, "ab") as lock:
            try:  # another writer could take the lock: this sync holds up nobody
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free = True
            except BlockingIOError:
                free = False
            seen.append((other.execute("SELECT n FROM t").fetchall(), free))

    thread = WriterThread(conn, lock_path=str(lock_path), sync=sync)
    try:
        answered: object = await thread.run(insert(7))  # type: ignore[arg-type]
    finally:
        thread.stop()
        conn.close()
    assert answered == 7
    assert seen == [([(7,)], True)]  # synced once, after the commit, with the lock free


@pytest.mark.anyio
async def test_writes_whose_commit_could_not_be_synced_fail(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    failing = [True]

    def sync() -> None:
        if failing.pop(0) if failing else False:
            raise sqlite3.OperationalError("disk I/O error")

    thread = WriterThread(conn, sync=sync)
    try:
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            await thread.run(insert(1))  # type: ignore[arg-type]
        assert await thread.run(insert(2)) == 2  # type: ignore[arg-type]  # the next sync succeeds
    finally:
        thread.stop()
        conn.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
