"""Figure 9's stores: 1,000,000 settled jobs (published, each with its event and delivery) already in
the store, built once and kept for later runs: a SQLite file under `.bench-cache/` (git-ignored) and a
PostgreSQL schema `bench_settled_<count>` in the bench database. A run adds its own submitted jobs, and
takes them out again afterwards (jobs left in progress by an interrupted run are removed before the
next one), so the settled jobs stay as built.

The rows are what the receiver writes for a finished edit (its own `job_doc` and event), from one
template with the id and times changed per job, written with the triggers' counters filled once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from receiver import lifecycle
from receiver.models import EditRequest, ImageInfo, JobState, Via
from receiver.stores import store_from_url
from receiver.stores.rows import LIVE
from tests.bench.seed import COLUMNS, INSERT_JOB, job_row

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".bench-cache"
CHUNK = 50_000
_ID = "00000000-0000-4000-8000-000000000000"
_T = 1_700_000_000.0
SINK = "file://events.jsonl"  # a delivery to the bench receivers' sink (delivered long ago)


Row = tuple[object, ...]


def _template() -> tuple[Row, str]:
    """One settled job: its row (`seed.COLUMNS`) and its event, with `_ID` and `_T` marks."""
    job = lifecycle.new_job(_ID, EditRequest(prompt="bench settled", metadata={"bench": True}), _T)
    image = ImageInfo(f"file:///data/images/{_ID}.png", "ab" * 32, 1_048_576, "image/png", 1024, 1024)
    job = dataclasses.replace(
        job,
        bfl_task_id=_ID,
        submitted_at=_T,
        sample_url=f"https://delivery-eu1.bfl.ai/results/{_ID}/sample.png?se=x&sig=y",
        bfl_finished_at=_T,
        received_at=_T,
        via=Via.WEBHOOK,
        stored_at=_T,
        image=image,
        finished_at=_T,
    )
    event = lifecycle.build_event(dataclasses.replace(job, state=JobState.STORED), "urn:kontext-receiver")
    settled = dataclasses.replace(job, state=JobState.PUBLISHED, due_at=None, published_at=_T, version=4)
    return job_row(settled), json.dumps(event.to_dict())


def settled_rows(count: int, start: int = 0) -> Iterator[tuple[Row, Row, Row]]:
    """(job row, event row, delivery row) of settled jobs `start`.. `start + count`, a second apart."""
    (_, state, model, version, key, due_at, submitting_until, _, doc), event = _template()
    t0 = time.time() - 3 * 365 * 86400 - count
    for n in range(start, start + count):
        job_id = str(uuid.UUID(int=n, version=4))
        at = t0 + n
        times = repr(at)
        job_doc_n = str(doc).replace(_ID, job_id).replace(repr(_T), times)
        event_n = event.replace(_ID, job_id).replace(repr(_T), times)
        yield (
            (job_id, state, model, version, key, due_at, submitting_until, at, job_doc_n),
            (job_id, event_n),
            (job_id, SINK, "delivered", 1, at, None, at),
        )


def sqlite_path(count: int) -> Path:
    return CACHE / f"settled-{count}.db"


def build_sqlite(count: int) -> float:
    """Build the SQLite store if it is not cached; return the seconds it took (0 when cached)."""
    path = sqlite_path(count)
    if path.exists():
        return 0.0
    started = time.monotonic()
    CACHE.mkdir(exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    asyncio.run(_create(f"sqlite:///{partial}"))
    conn = sqlite3.connect(partial, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for chunk_start in range(0, count, CHUNK):
            rows = list(settled_rows(min(CHUNK, count - chunk_start), chunk_start))
            conn.executemany(INSERT_JOB, [r[0] for r in rows])
            conn.executemany("INSERT INTO events VALUES (?, ?)", [r[1] for r in rows])
            conn.executemany("INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?)", [r[2] for r in rows])
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    partial.rename(path)
    return time.monotonic() - started


def postgres_schema(count: int) -> str:
    return f"bench_settled_{count}"


async def build_postgres(dsn: str, count: int) -> float:
    """Build the PostgreSQL schema if it is not there complete; return the seconds it took."""
    schema = postgres_schema(count)
    conn = await asyncpg.connect(dsn)
    try:
        done = await conn.fetchval(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'bench_built'",
            schema,
        )
        if done:
            return 0.0
        started = time.monotonic()
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # a part-built one
        await _create(f"{dsn}?schema={schema}")
        await conn.execute(f'SET search_path = "{schema}"')
        await conn.execute("ALTER TABLE jobs DISABLE TRIGGER USER")  # counted once at the end instead
        for chunk_start in range(0, count, CHUNK):
            rows = list(settled_rows(min(CHUNK, count - chunk_start), chunk_start))
            await conn.copy_records_to_table(
                "jobs", records=[r[0] for r in rows], columns=COLUMNS.split(", ")
            )
            await conn.copy_records_to_table("events", records=[r[1] for r in rows])
            await conn.copy_records_to_table("deliveries", records=[r[2] for r in rows])
        await conn.execute("ALTER TABLE jobs ENABLE TRIGGER USER")
        await conn.execute(
            "INSERT INTO settled_counts (state, model, shard, n)"
            " SELECT state, model, hashtext(id) & 31, count(*) FROM jobs GROUP BY 1, 2, 3"
        )
        await conn.execute("VACUUM ANALYZE jobs")
        await conn.execute("VACUUM ANALYZE events")
        await conn.execute("VACUUM ANALYZE deliveries")
        await conn.execute("CREATE TABLE bench_built (at timestamptz DEFAULT now())")
        return time.monotonic() - started
    finally:
        await conn.close()


async def _create(url: str) -> None:
    async with store_from_url(url):
        pass  # opening creates the tables


def remove_jobs(store_url: str, job_ids: list[str] | None) -> None:
    """Take a run's jobs out of the store again; with None, every job still in progress."""
    asyncio.run(_remove(store_url, job_ids))


async def _remove(store_url: str, job_ids: list[str] | None) -> None:
    chosen = "id IN (SELECT value FROM json_each(?))" if store_url.startswith("sqlite") else "id = ANY($1)"
    where = f"state IN {LIVE}" if job_ids is None else chosen
    statements = [
        f"DELETE FROM deliveries WHERE event_id IN (SELECT id FROM jobs WHERE {where})",
        f"DELETE FROM events WHERE id IN (SELECT id FROM jobs WHERE {where})",
        f"DELETE FROM jobs WHERE {where}",
    ]
    args = () if job_ids is None else (json.dumps(job_ids) if store_url.startswith("sqlite") else job_ids,)
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql in statements:
                conn.execute(sql, args)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    dsn, schema = store_url.split("?schema=")
    pg = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
    try:
        async with pg.transaction():
            for sql in statements:
                await pg.execute(sql, *args)
    finally:
        await pg.close()
