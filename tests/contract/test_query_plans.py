"""The hot queries stay index searches on a store full of finished jobs.

Each SQL store runs the operations of the hot path (a webhook's update, claims, the active-task count,
job and delivery look-ups, per-state counts, a submit claim within a daily credit cap) on tables
holding 20,000 settled jobs (submitted the day before) with their events and deliveries, records every
statement it sends, and asks the database for the plan of each: none may read a whole table or a whole
index. A plan is deterministic where a timing is not (figure 9 of
`make bench` measures the same with 1,000,000 jobs).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from receiver import lifecycle
from receiver.catalog import CATALOG
from receiver.credits import CreditBudget, utc_day
from receiver.models import Cost, EditRequest, JobState, Transition
from receiver.stores import Delivery, DeliveryState, Store, UpstreamLimits
from receiver.stores.postgres import PostgresStore
from receiver.stores.sqlite import SQLiteStore
from tests.bench.seed import COLUMNS, INSERT_JOB, job_row
from tests.contract.test_store_contract import KONTEXT_MAX, POLICY, PRO, SINKS, T0, make_job

pytestmark = pytest.mark.anyio

SETTLED = 20_000
MAX_STEPS = SETTLED // 4  # SQLite instructions; reading each settled job once takes several per job
MAX_ROWS = 100  # rows a PostgreSQL plan node may produce
# Tables that grow with the jobs (`job_inputs` only holds jobs from before input images went to the
# blob store, until submitted; `settled_counts` a row per settled state and model, and shard).
TABLES = ("jobs", "deliveries", "events")


def settled_rows() -> Iterator[tuple[tuple[Any, ...], tuple[str, str], list[tuple[Any, ...]]]]:
    """(job row, event row, delivery rows) of SETTLED published jobs, oldest first, all submitted
    before the UTC day of T0."""
    template = make_job("template", state=JobState.PUBLISHED, due_at=None, cost=Cost(4.0))
    before = utc_day(T0)[0] - SETTLED
    for n in range(SETTLED):
        job = dataclasses.replace(template, id=f"old-{n:06d}", created_at=before + n, submitted_at=before + n)
        event = lifecycle.build_event(job, POLICY.source)
        deliveries = [(job.id, sink, DeliveryState.DELIVERED.value, 1, 0.0, None, T0) for sink in SINKS]
        yield (
            job_row(job),
            (job.id, json.dumps(event.to_dict())),
            deliveries,
        )


async def hot_path(store: Store, run: str = "") -> None:
    """What a receiver does for edits in flight, with everything a claim can find (jobs named after
    `run`, so it can be done again)."""
    await store.insert(make_job(f"new{run}"))
    await store.insert(make_job(f"new-max{run}", request=EditRequest("edit", model=KONTEXT_MAX)))
    await store.claim_submits(T0, 60, UpstreamLimits(24, tuple(CATALOG), {KONTEXT_MAX: 6}))  # active tasks
    await store.claim({JobState.CREATED}, T0, 60, 6, KONTEXT_MAX)
    await store.claim({JobState.CREATED}, T0, 60, 24, PRO)
    await store.insert(make_job(f"capped{run}"))
    within_cap = CreditBudget.of_day(100.0, T0, lambda job: 4.0)  # today's spend: every claim counts it
    await store.claim_submits(T0, 60, UpstreamLimits(24, tuple(CATALOG)), within_cap)
    await store.credits_spent(within_cap.start, within_cap.end)
    sub = f"sub{run}"
    await store.insert(make_job(sub, state=JobState.SUBMITTED, due_at=T0))
    await store.claim({JobState.SUBMITTED}, T0 + 61, 60, 16)
    await store.get(sub)
    received = lambda job: Transition(  # noqa: E731
        dataclasses.replace(job, state=JobState.RECEIVED, due_at=T0 + 70)
    )
    await store.update(sub, received, SINKS)
    await store.claim({JobState.RECEIVED}, T0 + 71, 60, 16)
    stored = lambda job: lifecycle.finish(job, JobState.STORED, T0 + 72, POLICY)  # noqa: E731
    await store.update(sub, stored, SINKS, claimed_until=T0 + 100)
    await store.claim_deliveries(T0 + 200, 30, 10, SINKS)
    for delivery in await store.deliveries(sub):
        done = dataclasses.replace(delivery, state=DeliveryState.DELIVERED, delivered_at=T0 + 73)
        await store.complete_delivery(
            done, expected_attempts=delivery.attempts, then=lambda job: lifecycle.published(job, T0 + 73)
        )
    await store.event(sub)
    await store.save_delivery(Delivery(sub, SINKS[0], attempts=9), expected_attempts=99)
    for state in JobState:
        await store.count({state})


# Partial indexes of the jobs in progress only: reading one whole reads a few rows, however many jobs
# have settled.
LIVE_INDEXES = ("jobs_live", "jobs_upstream")


def full_reads(plan_lines: list[str]) -> list[str]:
    """SQLite plan lines that read a whole table or index of ours (`SCAN t`, `SCAN t USING INDEX i`),
    but for the partial indexes of live jobs."""
    live = re.compile(rf"USING (COVERING )?INDEX ({'|'.join(LIVE_INDEXES)})\b")
    scans = [line for line in plan_lines if re.match(rf"SCAN ({'|'.join(TABLES)})\b", line)]
    return [line for line in scans if not live.search(line)]


def vm_steps(conn: sqlite3.Connection, sql: str) -> int:
    """How many SQLite virtual-machine instructions `sql` takes, run in a transaction rolled back."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.execute("BEGIN")
    conn.set_progress_handler(count, 1)
    try:
        conn.execute(sql).fetchall()
    except sqlite3.IntegrityError:
        pass  # an insert of a row the recorded run wrote already: its look-up was counted
    finally:
        conn.set_progress_handler(None, 0)
        conn.execute("ROLLBACK")
    return steps


class TestSQLite:
    @pytest.fixture
    async def store(self, tmp_path: Path) -> Any:
        path = str(tmp_path / "receiver.db")
        async with SQLiteStore(path):
            pass  # creates the tables
        with sqlite3.connect(path) as conn:
            for job, event, deliveries in settled_rows():
                conn.execute(INSERT_JOB, job)
                conn.execute("INSERT INTO events VALUES (?, ?)", event)
                conn.executemany("INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?)", deliveries)
            conn.execute("ANALYZE")
        async with SQLiteStore(path) as store:
            yield store

    async def test_the_hot_path_never_reads_a_whole_table(self, store: SQLiteStore) -> None:
        assert await store.count({JobState.PUBLISHED}) == SETTLED
        statements: list[str] = []
        connections = {store._reader, store._writer.conn if store._writer else None} - {None}
        for conn in connections:
            assert conn is not None
            conn.set_trace_callback(statements.append)
        await hot_path(store)
        for conn in connections:
            assert conn is not None
            conn.set_trace_callback(None)
        queries = [sql for sql in statements if re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT)", sql, re.I)]
        assert len(queries) > 20
        explain = sqlite3.connect(store.path, isolation_level=None)
        try:
            plans = {sql: [row[3] for row in explain.execute(f"EXPLAIN QUERY PLAN {sql}")] for sql in queries}
            steps = {sql: vm_steps(explain, sql) for sql in queries}
        finally:
            explain.close()
        assert {sql: reads for sql, plan in plans.items() if (reads := full_reads(plan))} == {}
        # A search of an index range can still read every settled job (a count of them would): the
        # work each statement does must not be of the order of the rows stored.
        assert {sql: n for sql, n in steps.items() if n > MAX_STEPS} == {}
        assert await store.count({JobState.PUBLISHED}) == SETTLED + 1


def plan_nodes(plan: Any) -> Iterator[dict[str, Any]]:
    node = plan[0]["Plan"] if isinstance(plan, list) else plan
    yield node
    for child in node.get("Plans", ()):
        yield from plan_nodes(child)


def full_scans(plan: Any) -> list[str]:
    """PostgreSQL plan nodes that read a whole table of ours: sequential scans."""
    return [
        f"{node['Node Type']} on {node['Relation Name']}"
        for node in plan_nodes(plan)
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in TABLES
    ]


async def literals(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> str:
    """`args` as SQL literals of the types `sql` takes (EXECUTE takes no bound parameters)."""
    types = [t.name for t in (await conn.prepare(sql)).get_parameters()]
    quoted = [
        f"{await conn.fetchval(f'SELECT quote_nullable($1::{name}::text)', arg)}::{name}"
        for name, arg in zip(types, args, strict=True)
    ]
    return ", ".join(quoted)


def large_nodes(plan: Any) -> list[str]:
    """Plan nodes that produced more than MAX_ROWS rows (with ANALYZE; a generic plan has none)."""
    return [
        f"{node['Node Type']} on {node.get('Relation Name', '-')}: {node['Actual Rows']} rows"
        for node in plan_nodes(plan)
        if node.get("Actual Rows", 0) * node.get("Actual Loops", 1) > MAX_ROWS
    ]


class TestPostgres:
    @pytest.fixture
    async def store(self, postgres_schema_url: str) -> Any:
        store = PostgresStore.from_url(postgres_schema_url)
        store.max_connections = 1  # one connection: every statement the store sends is seen below
        async with store:
            rows = list(settled_rows())
            jobs = [job for job, _, _ in rows]
            await store.pool.copy_records_to_table("jobs", records=jobs, columns=COLUMNS.split(", "))
            await store.pool.copy_records_to_table("events", records=[event for _, event, _ in rows])
            deliveries = [d for _, _, ds in rows for d in ds]
            await store.pool.copy_records_to_table("deliveries", records=deliveries)
            await store.pool.execute("ANALYZE")
            yield store

    async def plans(self, store: PostgresStore, queries: list[tuple[str, tuple[Any, ...]]]) -> dict[str, Any]:
        """Each query's plan twice: with its values (a custom plan) and as PostgreSQL caches a prepared
        statement after a few runs (a generic plan, blind to the values)."""
        found: dict[str, Any] = {}
        async with store.pool.acquire() as conn:
            for n, (sql, args) in enumerate(queries):
                # Run for real (rolled back), so the plan shows how many rows each step produced.
                transaction = conn.transaction()
                await transaction.start()
                try:
                    analyze = f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"
                    found[sql] = json.loads(await conn.fetchval(analyze, *args))
                except asyncpg.UniqueViolationError:
                    pass  # an insert of a row the recorded run wrote already
                finally:
                    await transaction.rollback()
                async with conn.transaction():
                    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                    await conn.execute(f"PREPARE hot_{n} AS {sql}")
                    values = await literals(conn, sql, args)
                    execute = f"EXECUTE hot_{n}({values})" if args else f"EXECUTE hot_{n}"
                    found[f"generic: {sql}"] = json.loads(
                        await conn.fetchval(f"EXPLAIN (FORMAT JSON) {execute}")
                    )
                    await conn.execute(f"DEALLOCATE hot_{n}")
        return found

    async def test_the_hot_path_never_reads_a_whole_table(self, store: PostgresStore) -> None:
        assert await store.count({JobState.PUBLISHED}) == SETTLED
        seen: list[tuple[str, tuple[Any, ...]]] = []

        def logger(record: Any) -> None:
            args = tuple(record.args or ())
            if args and isinstance(args[0], tuple):  # executemany: one tuple per run; the first will do
                args = args[0]
            seen.append((record.query, args))

        async with store.pool.acquire() as conn:
            conn.add_query_logger(logger)
        try:
            await hot_path(store)
        finally:
            async with store.pool.acquire() as conn:
                conn.remove_query_logger(logger)
        unique = {sql + repr(args): (sql, args) for sql, args in seen}
        ours = re.compile(rf"\s*(SELECT|UPDATE|DELETE|INSERT|WITH)\b.*\b({'|'.join(TABLES)})\b", re.I | re.S)
        # (Not asyncpg's own type look-ups, nor the pool's multi-statement reset of a connection.)
        queries = [(sql, args) for sql, args in unique.values() if ours.match(sql) and ";" not in sql]
        assert len(queries) > 10
        plans = await self.plans(store, queries)
        assert {sql: scans for sql, plan in plans.items() if (scans := full_scans(plan))} == {}
        assert {sql: rows for sql, plan in plans.items() if (rows := large_nodes(plan))} == {}
        assert await store.count({JobState.PUBLISHED}) == SETTLED + 1

    async def test_the_hot_path_runs_on_statements_prepared_once(self, store: PostgresStore) -> None:
        """asyncpg prepares each statement on first use and keeps it per connection: a second round of
        the hot path sends no statement text to parse again."""

        async def prepared() -> set[str]:
            async with store.pool.acquire() as conn:
                rows = await conn.fetch("SELECT statement FROM pg_prepared_statements")
                return {row["statement"] for row in rows}

        await hot_path(store, "first")
        before = await prepared()
        await hot_path(store, "second")
        assert await prepared() == before
        assert any("WITH changed AS" in sql for sql in before)  # the group commit's one write
        assert any("UPDATE deliveries" in sql and "WITH ORDINALITY" in sql for sql in before)  # completions
