"""SQLite store (the default): one connection in WAL mode, driven from a single worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from receiver.errors import ConfigError
from receiver.models import Event, Job, JobState, Transition
from receiver.resource import ResourceBase
from receiver.stores.base import (
    Change,
    Delivery,
    DeliveryState,
    Overview,
    StoreFigures,
    UpstreamLimits,
    claims_within,
)
from receiver.stores.feed import FEED_COLUMNS, FeedEntry, Signal, entry_from_row
from receiver.stores.rows import (
    CREDITS_COMMITTED,
    CREDITS_SPENT,
    DELIVERY_COLUMNS,
    FINAL_STATE_NAMES,
    JOB_TABLES,
    JOBS_BY_STATE,
    OUTBOX_BY_SINK,
    SELECT_DELIVERIES,
    UPSTREAM_SLOTS,
    active_upstream,
    count_queries,
    delivery_from_row,
    figures_from_rows,
    job_columns,
    job_doc,
    job_from_doc,
    new_delivery,
)
from receiver.stores.sqlite_writer import WriterThread
from receiver.stores.urgency import is_urgent

if TYPE_CHECKING:
    from receiver.credits import CreditBudget

T = TypeVar("T")
# The document's fields a daily credit cap counts (the index `jobs_submitted` is on `submitted_at`).
_CREDITS = {
    "cost": "json_extract(doc, '$.cost.credits')",
    "submitted_at": "json_extract(doc, '$.submitted_at')",
    "estimate": "json_extract(doc, '$.credit_estimate')",
}
_SPENT = CREDITS_SPENT.format(since="?", until="?", **_CREDITS)
_COMMITTED = CREDITS_COMMITTED.format(since="?", until="?", now="?", **_CREDITS)

FEED_WATCH_S = 0.25  # how soon a feed reader learns of entries another process committed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    due_at REAL,
    created_at REAL NOT NULL,
    doc TEXT NOT NULL,
    submitting_until REAL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, due_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_submitted ON jobs (json_extract(doc, '$.submitted_at'));
DROP INDEX IF EXISTS jobs_state_model;
CREATE INDEX IF NOT EXISTS jobs_live ON jobs (state, model)
    WHERE state IN ('created', 'received', 'stored', 'submitted');
CREATE TABLE IF NOT EXISTS job_inputs (job_id TEXT PRIMARY KEY, image TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    event_id TEXT NOT NULL,
    sink TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    PRIMARY KEY (event_id, sink)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_at);
CREATE TABLE IF NOT EXISTS feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    job_id TEXT NOT NULL,
    state TEXT,
    sink TEXT,
    body TEXT
);
CREATE INDEX IF NOT EXISTS feed_job ON feed (job_id, seq);
CREATE TRIGGER IF NOT EXISTS feed_job_created AFTER INSERT ON jobs BEGIN
    INSERT INTO feed (at, type, job_id, state) VALUES (NOW_S, 'kontext.job.state', NEW.id, NEW.state);
END;
CREATE TRIGGER IF NOT EXISTS feed_job_state AFTER UPDATE OF state ON jobs
WHEN NEW.state IS NOT OLD.state BEGIN
    INSERT INTO feed (at, type, job_id, state) VALUES (NOW_S, 'kontext.job.state', NEW.id, NEW.state);
END;
CREATE TRIGGER IF NOT EXISTS feed_event AFTER INSERT ON events BEGIN
    INSERT INTO feed (at, type, job_id, body)
    VALUES (NOW_S, json_extract(NEW.body, '$.type'), NEW.id, NEW.body);
END;
CREATE TRIGGER IF NOT EXISTS feed_delivery_state AFTER UPDATE OF state ON deliveries
WHEN NEW.state IS NOT OLD.state BEGIN
    INSERT INTO feed (at, type, job_id, state, sink)
    VALUES (NOW_S, 'kontext.delivery.state', NEW.event_id, NEW.state, NEW.sink);
END;
""".replace("NOW_S", "(julianday('now') - 2440587.5) * 86400.0")

# Per-state counts of settled jobs (see `rows.SETTLED_STATES`), kept by triggers. An empty table with
# the triggers in place means no settled job exists, so filling it from the jobs stored then is right
# both for a new database and for one from before the triggers. One transaction: another process
# opening the same file meanwhile waits, then finds it done.
_SETTLED = "('published', 'failed', 'moderated', 'expired')"
_SETTLED_COUNTS = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS settled_counts (
    state TEXT NOT NULL, model TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (state, model)
);
INSERT INTO settled_counts (state, model, n)
    SELECT state, model, COUNT(*) FROM jobs
    WHERE state IN {_SETTLED} AND NOT EXISTS (SELECT 1 FROM settled_counts) GROUP BY state, model;
CREATE TRIGGER IF NOT EXISTS jobs_settled_insert AFTER INSERT ON jobs WHEN NEW.state IN {_SETTLED} BEGIN
    INSERT INTO settled_counts (state, model, n) VALUES (NEW.state, NEW.model, 1)
    ON CONFLICT (state, model) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS jobs_settled_update AFTER UPDATE OF state ON jobs
WHEN NEW.state IN {_SETTLED} AND OLD.state IS NOT NEW.state BEGIN
    INSERT INTO settled_counts (state, model, n) VALUES (NEW.state, NEW.model, 1)
    ON CONFLICT (state, model) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS jobs_settled_delete AFTER DELETE ON jobs WHEN OLD.state IN {_SETTLED} BEGIN
    UPDATE settled_counts SET n = n - 1 WHERE state = OLD.state AND model = OLD.model;
END;
COMMIT;
"""  # noqa: S608 - constants only


class SQLiteStore(ResourceBase):
    """Writes go through one writer thread with group commit; reads use a connection of their own, so
    they never wait behind a commit (WAL lets readers run beside the writer)."""

    # A locked or unwritable database (after the busy timeout), a disk that fails: see `stores.guard`.
    unavailable_errors = (sqlite3.OperationalError,)

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: WriterThread | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_slot = anyio.CapacityLimiter(1)  # one reader at a time on the read connection
        self._signal = Signal()
        self._feed_head = 0  # the newest feed number seen committed, by this process or another
        self._feed_watch: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """`sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or `sqlite://:memory:`."""
        if not url.startswith("sqlite://"):
            raise ConfigError(f"not a SQLite URL: {url!r}")
        path = url.removeprefix("sqlite://")
        path = path.removeprefix("/") if path != "/:memory:" else ":memory:"
        if not path:
            raise ConfigError(f"SQLite URL names no file: {url!r}")
        return cls(path)

    async def open(self) -> None:
        writer = await anyio.to_thread.run_sync(self._connect)
        writer.executescript(_SCHEMA)
        _upgrade(writer)
        writer.executescript(_SETTLED_COUNTS)
        self._feed_head = _feed_head(writer)
        loop = asyncio.get_running_loop()
        self._writer = WriterThread(
            writer,
            on_commit=lambda: self._after_commit(writer, loop),
            lock_path=None if self.path == ":memory:" else f"{self.path}-writer.lock",
            sync=(lambda: None) if self.path == ":memory:" else self._sync_wal,
        )
        # An in-memory database exists only on its one connection: there, reads queue with the writes.
        self._reader = writer if self.path == ":memory:" else await anyio.to_thread.run_sync(self._connect)

    async def aclose(self) -> None:
        if self._feed_watch is not None:
            self._feed_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_watch
            self._feed_watch = None
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if writer is not None:
            await anyio.to_thread.run_sync(writer.stop)
            writer.conn.close()
        if reader is not None and (writer is None or reader is not writer.conn):
            reader.close()

    def _connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit does not fsync the WAL under SQLite's write lock; the writer thread does, once
        # it has let go of the lock and before it answers any write (`_sync_wal`). What is acknowledged
        # is on disk all the same, and SQLite still syncs around every checkpoint.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _sync_wal(self) -> None:
        """Flush the WAL, holding every commit written to it so far, to disk (in the writer thread). A
        commit no longer in the WAL was checkpointed into the database file, which SQLite synced."""
        try:
            try:
                fd = os.open(f"{self.path}-wal", os.O_RDONLY)
            except FileNotFoundError:
                fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # a failing disk: the store is unavailable, as for a failed commit
            raise sqlite3.OperationalError(f"could not flush the WAL to disk: {exc}") from exc

    def _after_commit(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        """In the writer thread, after each commit: wake feed readers when the feed grew."""
        head = _feed_head(conn)
        if head > self._feed_head:
            self._feed_head = head
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
                loop.call_soon_threadsafe(self._signal.notify)

    async def _write(self, write: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise RuntimeError("store is not open; use `async with store:`")
        return await self._writer.run(write, urgent=is_urgent())

    async def _any_due(self, due: str, params: tuple[Any, ...]) -> bool:
        """Whether a claim would find anything: asked on the read connection, so the loops that look
        for work on every wake-up do not queue empty transactions at the writer."""
        return await self._read(f"SELECT 1 {due} LIMIT 1", params) is not None

    async def _read(self, sql: str, params: tuple[Any, ...], many: bool = False) -> Any:
        reader = self._reader
        if reader is None:
            raise RuntimeError("store is not open; use `async with store:`")
        if self._writer is not None and reader is self._writer.conn:
            return await self._write(lambda conn: _fetch(conn, sql, params, many))
        return await anyio.to_thread.run_sync(_fetch, reader, sql, params, many, limiter=self._read_slot)

    async def insert(self, job: Job) -> Job:
        def insert(conn: sqlite3.Connection) -> Job:
            if job.idempotency_key is not None:
                row = conn.execute(
                    "SELECT doc FROM jobs WHERE idempotency_key = ?", (job.idempotency_key,)
                ).fetchone()
                if row is not None:
                    return job_from_doc(row[0])
            conn.execute(
                "INSERT INTO jobs (id, state, model, version, idempotency_key, due_at, submitting_until,"
                " created_at, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, *job_columns(job), job.created_at, job_doc(job)),
            )
            return job

        return await self._write(insert)

    async def get(self, job_id: str) -> Job | None:
        row = await self._read("SELECT doc FROM jobs WHERE id = ?", (job_id,))
        return job_from_doc(row[0]) if row else None

    async def keyed(self, idempotency_key: str) -> Job | None:
        row = await self._read("SELECT doc FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
        return job_from_doc(row[0]) if row else None

    async def legacy_input(self, job_id: str) -> str | None:
        row = await self._read("SELECT image FROM job_inputs WHERE job_id = ?", (job_id,))
        return str(row[0]) if row else None

    async def save(
        self, job: Job, *, event: Event | None = None, sinks: Sequence[str] = (), drop_input: bool = False
    ) -> Job | None:
        try:
            return await self._write(lambda conn: _save(conn, job, event, sinks, drop_input))
        except sqlite3.IntegrityError:  # the event exists already: another writer finished the job
            return None

    async def update(
        self,
        job_id: str,
        change: Callable[[Job], Transition | None],
        sinks: Sequence[str] = (),
        *,
        claimed_until: float | None = None,
    ) -> tuple[Job | None, bool]:
        def update(conn: sqlite3.Connection) -> tuple[Job | None, bool]:
            row = conn.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None, False
            job = job_from_doc(row[0])
            transition = change(job)
            if transition is None:
                return job, False
            saved = _save(conn, transition.job, transition.event, sinks, transition.drop_input, claimed_until)
            return (saved, True) if saved is not None else (job, False)

        return await self._write(update)

    async def claim(
        self,
        states: Collection[JobState],
        now: float,
        lease_s: float,
        limit: int,
        model: str | None = None,
    ) -> list[Job]:
        due, params = _due(states, now, model)
        if not await self._any_due(due, params):
            return []
        return await self._write(
            lambda conn: _write_claims(
                conn, [job.claimed(now, lease_s) for job in _select(conn, due, params, limit)]
            )
        )

    async def claim_submits(
        self, now: float, lease_s: float, limits: UpstreamLimits, budget: CreditBudget | None = None
    ) -> list[Job]:
        # Asked on the read connection first: with every slot taken, a wake-up writes nothing.
        due, params = _due({JobState.CREATED}, now, None)
        if not await self._any_due(due, params):
            return []
        slots = UPSTREAM_SLOTS.format(now="?")
        free, _ = limits.room(active_upstream(await self._read(slots, (now,), many=True)))
        if free <= 0:
            return []

        def claim(conn: sqlite3.Connection) -> list[Job]:
            def due_of(model: str, wanted: int) -> list[Job]:
                return _select(conn, *_due({JobState.CREATED}, now, model), wanted)

            def write(jobs: list[Job]) -> list[Job]:
                return _write_claims(conn, jobs)

            active = active_upstream(conn.execute(slots, (now,)).fetchall())
            spent = 0.0
            if budget is not None:
                spent = float(conn.execute(_COMMITTED, (budget.start, budget.end, now)).fetchone()[0])
            return limits.fill(active, claims_within(budget, spent, now, lease_s, due_of, write))

        return await self._write(claim)

    async def count(self, states: Collection[JobState], model: str | None = None) -> int:
        total = 0
        for select, part in count_queries(states):
            sql = f"{select} state IN ({','.join('?' * len(part))})" + (" AND model = ?" if model else "")
            row = await self._read(sql, (*part, *([model] if model else [])))
            total += int(row[0]) if row else 0
        return total

    async def credits_spent(self, since: float, until: float) -> float:
        row = await self._read(_SPENT, (since, until))
        return float(row[0]) if row else 0.0

    async def list_jobs(
        self, *, state: JobState | None = None, dead_letter: bool = False, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        sql = "SELECT doc FROM jobs WHERE 1 = 1"
        params: tuple[Any, ...] = ()
        if state is not None:
            sql += " AND state = ?"
            params += (state.value,)
        if dead_letter:
            sql += " AND id IN (SELECT event_id FROM deliveries WHERE state = ?)"
            params += (DeliveryState.DEAD.value,)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        rows = await self._read(sql, (*params, limit, offset), many=True)
        return [job_from_doc(row[0]) for row in rows]

    async def event(self, event_id: str) -> Event | None:
        row = await self._read("SELECT body FROM events WHERE id = ?", (event_id,))
        return Event.from_dict(json.loads(row[0])) if row else None

    async def deliveries(self, event_id: str) -> list[Delivery]:
        rows = await self._read(
            SELECT_DELIVERIES + " WHERE event_id = ? ORDER BY sink", (event_id,), many=True
        )
        return [delivery_from_row(row) for row in rows]

    async def deliveries_of(self, event_ids: Collection[str]) -> dict[str, list[Delivery]]:
        found: dict[str, list[Delivery]] = {event_id: [] for event_id in event_ids}
        if found:
            marks = ",".join("?" * len(found))
            sql = f"{SELECT_DELIVERIES} WHERE event_id IN ({marks}) ORDER BY sink"
            for row in await self._read(sql, tuple(found), many=True):
                delivery = delivery_from_row(row)
                found[delivery.event_id].append(delivery)
        return found

    async def claim_deliveries(
        self, now: float, lease_s: float, limit: int, sinks: Collection[str]
    ) -> list[Delivery]:
        marks = ",".join("?" * len(sinks))
        due = f"FROM deliveries WHERE state = ? AND next_at <= ? AND sink IN ({marks})"
        params = (DeliveryState.PENDING.value, now, *sinks)
        if not await self._any_due(due, params):
            return []

        def claim(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(
                f"SELECT {DELIVERY_COLUMNS} {due} ORDER BY next_at, event_id, sink LIMIT ?",
                (*params, limit),
            ).fetchall()
            claimed = [delivery_from_row(row).claimed(now, lease_s) for row in rows]
            conn.executemany(
                "UPDATE deliveries SET attempts = ?, next_at = ? WHERE event_id = ? AND sink = ?",
                [(d.attempts, d.next_at, d.event_id, d.sink) for d in claimed],
            )
            return claimed

        return await self._write(claim)

    async def save_delivery(self, delivery: Delivery, *, expected_attempts: int) -> bool:
        return await self._write(lambda conn: _save_delivery(conn, delivery, expected_attempts))

    async def complete_delivery(
        self, delivery: Delivery, *, expected_attempts: int, then: Callable[[Job], Transition | None]
    ) -> bool:
        def complete(conn: sqlite3.Connection) -> bool:
            if not _save_delivery(conn, delivery, expected_attempts):
                return False
            undelivered = conn.execute(
                "SELECT 1 FROM deliveries WHERE event_id = ? AND state != ? LIMIT 1",
                (delivery.event_id, DeliveryState.DELIVERED.value),
            ).fetchone()
            row = (
                None
                if undelivered
                else conn.execute("SELECT doc FROM jobs WHERE id = ?", (delivery.event_id,)).fetchone()
            )
            transition = then(job_from_doc(row[0])) if row else None
            if transition is not None:
                _save(conn, transition.job, transition.event, (), transition.drop_input)
            return True

        return await self._write(complete)

    async def redeliver(self, event_id: str, sinks: Sequence[str], now: float) -> int:
        def reset(conn: sqlite3.Connection) -> int:
            if conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is None:
                return 0
            conn.executemany(
                "INSERT INTO deliveries (event_id, sink, state, attempts, next_at) VALUES (?, ?, ?, 0, ?)"
                " ON CONFLICT (event_id, sink) DO UPDATE SET state = excluded.state, attempts = 0,"
                " next_at = excluded.next_at, last_error = NULL, delivered_at = NULL",
                [(event_id, sink, DeliveryState.PENDING.value, now) for sink in sinks],
            )
            return len(sinks)

        return await self._write(reset)

    async def feed(
        self, after: int, *, job_id: str | None = None, types: Collection[str] = (), limit: int = 100
    ) -> list[FeedEntry]:
        sql = f"SELECT {FEED_COLUMNS} FROM feed WHERE seq > ?"  # noqa: S608 - constants and "?" only
        params: tuple[Any, ...] = (after,)
        if job_id is not None:
            sql += " AND job_id = ?"
            params += (job_id,)
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params += tuple(types)
        rows = await self._read(sql + " ORDER BY seq LIMIT ?", (*params, limit), many=True)
        return [entry_from_row(row) for row in rows]

    async def feed_head(self) -> int:
        row = await self._read("SELECT MAX(seq) FROM feed", ())
        return int(row[0] or 0)

    def feed_changed(self) -> anyio.Event:
        if self._feed_watch is None and self.path != ":memory:":
            self._feed_watch = asyncio.get_running_loop().create_task(self._watch_feed())
        return self._signal.changed()

    async def _watch_feed(self) -> None:
        """Other processes on this file (`serve --processes N`) commit where our writer thread cannot
        see it: once anyone waits for the feed, look for its growth every FEED_WATCH_S."""
        while True:
            await anyio.sleep(FEED_WATCH_S)
            with contextlib.suppress(*self.unavailable_errors):
                head = await self.feed_head()
                if head > self._feed_head:
                    self._feed_head = head
                    self._signal.notify()

    async def overview(self, now: float) -> Overview:
        states = await self._read(JOBS_BY_STATE, (), many=True)  # settled jobs from their counters
        recent = await self._read("SELECT COUNT(*) FROM feed WHERE body IS NOT NULL AND at >= ?", (now - 60,))
        dead = await self._read(
            "SELECT COUNT(DISTINCT event_id) FROM deliveries WHERE state = ?", (DeliveryState.DEAD.value,)
        )
        oldest = await self._read(
            "SELECT d.sink, MIN(json_extract(j.doc, '$.finished_at')) FROM deliveries d"
            " JOIN jobs j ON j.id = d.event_id WHERE d.state != ? GROUP BY d.sink",
            (DeliveryState.DELIVERED.value,),
            many=True,
        )
        return Overview(
            jobs_per_state={state.value: 0 for state in JobState} | {row[0]: int(row[1]) for row in states},
            events_last_minute=int(recent[0]),
            dead_letters=int(dead[0]),
            oldest_undelivered={row[0]: float(row[1] or 0.0) for row in oldest},
        )

    def watch(self, on_change: Callable[[Change], None]) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def figures(self) -> StoreFigures | None:
        jobs = await self._read(JOBS_BY_STATE, (), many=True)
        outbox = await self._read(OUTBOX_BY_SINK.format(time="json_extract(e.body, '$.time')"), (), many=True)
        return figures_from_rows(jobs, outbox)

    async def expired_jobs(self, before: float, limit: int) -> list[Job]:
        marks = ",".join("?" * len(FINAL_STATE_NAMES))
        rows = await self._read(
            f"SELECT doc FROM jobs WHERE created_at < ? AND state IN ({marks}) AND NOT EXISTS"  # noqa: S608
            " (SELECT 1 FROM deliveries WHERE event_id = jobs.id AND state = ?)"
            " ORDER BY created_at, id LIMIT ?",
            (before, *FINAL_STATE_NAMES, DeliveryState.PENDING.value, limit),
            many=True,
        )
        return [job_from_doc(row[0]) for row in rows]

    async def delete_jobs(self, job_ids: Collection[str]) -> int:
        ids = list(job_ids)
        marks = ",".join("?" * len(ids))

        def delete(conn: sqlite3.Connection) -> int:
            deleted = 0
            for table, column in JOB_TABLES:
                deleted = conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids).rowcount  # noqa: S608
            return int(deleted)

        return await self._write(delete) if ids else 0


def _feed_head(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(seq) FROM feed").fetchone()
    return int(row[0] or 0)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a database created by an earlier release up to this schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "submitting_until" not in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN submitting_until REAL")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS jobs_upstream ON jobs (model)"
        " WHERE state = 'submitted' OR submitting_until IS NOT NULL"
    )


def _due(states: Collection[JobState], now: float, model: str | None) -> tuple[str, tuple[Any, ...]]:
    """The FROM and WHERE of due jobs in `states` (and of `model`), with their parameters."""
    marks = ",".join("?" * len(states))
    due = f"FROM jobs WHERE state IN ({marks}) AND due_at <= ?"
    params: tuple[Any, ...] = (*states, now)
    if model is not None:
        due += " AND model = ?"
        params += (model,)
    return due, params


def _select(conn: sqlite3.Connection, due: str, params: tuple[Any, ...], limit: int) -> list[Job]:
    rows = conn.execute(f"SELECT doc {due} ORDER BY due_at, created_at LIMIT ?", (*params, limit))
    return [job_from_doc(doc) for (doc,) in rows]


def _write_claims(conn: sqlite3.Connection, jobs: list[Job]) -> list[Job]:
    """Store claims (or holds) of `jobs`, each as a new version of the one stored."""
    taken = [dataclasses.replace(job, version=job.version + 1) for job in jobs]
    conn.executemany(
        "UPDATE jobs SET version = ?, due_at = ?, submitting_until = ?, doc = ? WHERE id = ?",
        [(job.version, *job_columns(job)[4:], job_doc(job), job.id) for job in taken],
    )
    return taken


def _save(
    conn: sqlite3.Connection,
    job: Job,
    event: Event | None,
    sinks: Sequence[str],
    drop_input: bool,
    claimed_until: float | None = None,
) -> Job | None:
    saved = dataclasses.replace(job, version=job.version + 1)
    updated = conn.execute(
        "UPDATE jobs SET state = ?, model = ?, version = ?, idempotency_key = ?, due_at = ?,"
        " submitting_until = ?, doc = ? WHERE id = ? AND version = ?",
        (*job_columns(saved), job_doc(saved), job.id, job.version),
    ).rowcount
    if updated != 1:
        return None
    if drop_input:
        conn.execute("DELETE FROM job_inputs WHERE job_id = ?", (job.id,))
    if event is not None:
        conn.execute("INSERT INTO events (id, body) VALUES (?, ?)", (event.id, json.dumps(event.to_dict())))
        conn.executemany(
            "INSERT INTO deliveries (event_id, sink, state, attempts, next_at)"
            " VALUES (?, ?, 'pending', ?, ?)",
            [(event.id, sink, *new_delivery(claimed_until)) for sink in sinks],
        )
    return saved


def _save_delivery(conn: sqlite3.Connection, delivery: Delivery, expected_attempts: int) -> bool:
    updated = conn.execute(
        "UPDATE deliveries SET state = ?, attempts = ?, next_at = ?, last_error = ?, delivered_at = ?"
        " WHERE event_id = ? AND sink = ? AND attempts = ?",
        (
            delivery.state.value,
            delivery.attempts,
            delivery.next_at,
            delivery.last_error,
            delivery.delivered_at,
            delivery.event_id,
            delivery.sink,
            expected_attempts,
        ),
    )
    return bool(updated.rowcount == 1)


def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...], many: bool) -> Any:
    cursor = conn.execute(sql, params)
    return cursor.fetchall() if many else cursor.fetchone()
