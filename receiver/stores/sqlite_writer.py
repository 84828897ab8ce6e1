"""Group commit for SQLite: every write runs on one connection, in a thread of its own, many per transaction.

Writes that arrive while a transaction is being committed wait, and go together into the next one, so
a burst of writes shares one fsync; yet no write is answered before the transaction holding it is on
disk. Each write runs under a savepoint, so one that raises is rolled back alone. Urgent writes (someone
is waiting for the answer) go into the next transaction ahead of every background write queued.

Several processes may write to one database file (a multi-process `serve`): with a lock file, each
transaction first takes an exclusive `flock` on it, so writers queue in the kernel and the next one is
woken the moment a commit ends, instead of SQLite's busy handler polling with sleeps of milliseconds.
With `sync`, a commit is made durable after the lock is let go and before any of its writes is
answered: the fsync of one process's commit no longer holds up every other writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

MAX_BATCH = 64  # background writes per transaction: an urgent write never waits behind many
_STOP = object()
_URGENT = object()

_Write = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class WriterThread:
    def __init__(
        self,
        conn: sqlite3.Connection,
        on_commit: Callable[[], None] = lambda: None,
        lock_path: str | None = None,
        sync: Callable[[], None] = lambda: None,
    ) -> None:
        self.conn = conn
        self.on_commit = on_commit  # runs in this thread after every commit
        self.sync = sync  # makes a commit durable, after the write lock is let go
        self._lock = open(lock_path, "ab") if lock_path is not None else None  # noqa: SIM115 - closed in stop
        self._queue: queue.SimpleQueue[_Write | object] = queue.SimpleQueue()
        self._urgent: queue.SimpleQueue[_Write] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite-writer", daemon=True)
        self._thread.start()

    async def run(self, write: Callable[[sqlite3.Connection], T], urgent: bool = False) -> T:
        """Run `write(conn)` in the next transaction; return its result once that is committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        if urgent:
            self._urgent.put((write, done, loop))
            self._queue.put(_URGENT)  # wakes the thread; the write itself waits in the urgent queue
        else:
            self._queue.put((write, done, loop))
        return await done

    def stop(self) -> None:
        """Finish what is queued, then end the thread (blocking)."""
        self._queue.put(_STOP)
        self._thread.join()
        if self._lock is not None:
            self._lock.close()

    def _serve(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            pending = [first]
            while len(pending) < MAX_BATCH:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in pending
            batch = self._take_urgent()
            batch += [item for item in pending if item is not _STOP and item is not _URGENT]  # type: ignore[misc]
            batch += self._take_urgent()  # any that came in meanwhile
            if batch:
                self._commit(batch)

    def _take_urgent(self) -> list[_Write]:
        taken = []
        while True:
            try:
                taken.append(self._urgent.get_nowait())
            except queue.Empty:
                return taken

    def _commit(self, batch: list[_Write]) -> None:
        with self._locked():
            outcomes, committed = self._transaction(batch)
        if committed:
            try:
                self.sync()
            except Exception as exc:  # committed, but not known to be on disk: answered as failed
                outcomes = [(False, exc)] * len(batch)
            with contextlib.suppress(sqlite3.Error):  # a failed look after the commit changes nothing
                self.on_commit()
        # One wake-up of each waiting event loop per transaction, not one per write.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, done, loop), (ok, value) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((done, ok, value))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, settled)

    def _transaction(self, batch: list[_Write]) -> tuple[list[tuple[bool, Any]], bool]:
        """Each write's outcome, and whether the transaction was committed."""
        conn = self.conn
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for write, _, _ in batch:
                conn.execute("SAVEPOINT write")
                try:
                    outcomes.append((True, write(conn)))
                except Exception as exc:  # this write fails alone; the others still commit
                    conn.execute("ROLLBACK TO write")
                    outcomes.append((False, exc))
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
        except Exception as exc:  # the transaction itself failed: so did every write in it
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return [(False, exc)] * len(batch), False
        return outcomes, True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock is None:
            yield
            return
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for done, ok, value in settled:
        if done.cancelled():  # the caller went away; its write is committed all the same
            continue
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)
