"""What only PostgreSQL promises beyond the contract: replicas sharing one database, and migrations."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

from receiver import lifecycle
from receiver.bfl.sansio import Report, TaskReport
from receiver.catalog import CATALOG
from receiver.errors import ConfigError, ReceiverError
from receiver.models import EditRequest, Job, JobState, Via
from receiver.stores import Change, UpstreamLimits, store_from_url
from receiver.stores.migrations import POSTGRES as MIGRATIONS
from receiver.stores.postgres import PostgresStore, migrate
from tests.contract.test_store_contract import POLICY, SINKS, T0, final, legacy_doc, make_job

pytestmark = pytest.mark.anyio

T = TypeVar("T")
ALL_MIGRATIONS = [name for name, _ in MIGRATIONS]


@pytest.fixture
async def replicas(postgres_schema_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one schema, each with its own pool: two receiver replicas."""
    async with (
        PostgresStore.from_url(postgres_schema_url) as a,
        PostgresStore.from_url(postgres_schema_url) as b,
    ):
        yield a, b


async def concurrently(*calls: Callable[[], Awaitable[T]]) -> list[T]:
    """Run every call at once; their results in call order."""
    results: dict[int, T] = {}

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        results[index] = await call()

    async with anyio.create_task_group() as tasks:
        for index, call in enumerate(calls):
            tasks.start_soon(run, index, call)
    return [results[index] for index in range(len(calls))]


async def drain(claim: Callable[[], Awaitable[Sequence[T]]]) -> list[T]:
    """Claim batch after batch until a claim comes back empty."""
    taken: list[T] = []
    while batch := await claim():
        taken.extend(batch)
    return taken


# --- URLs ----------------------------------------------------------------------------------------------


def test_from_url_takes_both_schemes_and_strips_the_schema_option() -> None:
    store = store_from_url("postgres://app:secret@db.internal:6432/jobs?schema=tenant_a&sslmode=require")
    assert isinstance(store, PostgresStore)
    assert (store.dsn, store.schema) == (
        "postgres://app:secret@db.internal:6432/jobs?sslmode=require",
        "tenant_a",
    )
    store = store_from_url("postgresql://app@db/jobs")
    assert isinstance(store, PostgresStore)
    assert (store.dsn, store.schema) == ("postgresql://app@db/jobs", None)


@pytest.mark.parametrize("query", ["schema=Tenant", "schema=a;drop", "schema=", "schema=a&schema=b"])
def test_from_url_refuses_a_schema_that_is_not_a_plain_name(query: str) -> None:
    with pytest.raises(ConfigError, match="schema=") as info:
        PostgresStore.from_url(f"postgresql://app:secret@db/jobs?{query}")
    assert "secret" not in str(info.value)


async def test_an_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(
        ReceiverError, match=r"cannot open the PostgreSQL store postgresql://\*\*\*@127.0.0.1:1/jobs"
    ):
        async with PostgresStore.from_url("postgresql://app:secret@127.0.0.1:1/jobs"):
            pass


# --- replicas ------------------------------------------------------------------------------------------


async def test_replicas_claiming_at_once_never_take_the_same_job(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    ids = {f"job-{n:03}" for n in range(200)}
    for job_id in ids:
        await a.insert(make_job(job_id, due_at=T0))

    def claimer(store: PostgresStore) -> Callable[[], Awaitable[list[Job]]]:
        return lambda: drain(lambda: store.claim({JobState.CREATED}, T0 + 1, 60, 7))

    batches = await concurrently(claimer(a), claimer(b), claimer(a), claimer(b))
    taken = [job.id for batch in batches for job in batch]
    assert len(taken) == len(set(taken)) == len(ids)
    assert set(taken) == ids
    assert await b.claim({JobState.CREATED}, T0 + 1, 60, 500) == []
    assert {(job.version, job.attempts) for job in await a.list_jobs(limit=500)} == {(1, 1)}


async def test_replicas_claiming_deliveries_at_once_never_take_the_same_one(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    for n in range(50):
        job = await a.insert(make_job(f"job-{n:02}"))
        transition = final(job)
        assert await a.save(transition.job, event=transition.event, sinks=SINKS) is not None

    def claimer(store: PostgresStore) -> Callable[[], Awaitable[list[tuple[str, str]]]]:
        async def claim() -> list[tuple[str, str]]:
            return [(d.event_id, d.sink) for d in await store.claim_deliveries(T0, 30, 3, SINKS)]

        return lambda: drain(claim)

    batches = await concurrently(claimer(a), claimer(b), claimer(a), claimer(b))
    taken = [key for batch in batches for key in batch]
    assert len(taken) == len(set(taken)) == 50 * len(SINKS)


async def test_a_claim_skips_rows_another_transaction_holds(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    for job_id in ("held", "free"):
        await a.insert(make_job(job_id, due_at=T0))
    async with b.pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT id FROM jobs WHERE id = 'held' FOR UPDATE")
        with anyio.fail_after(10):  # a claim that waited for the lock would hang here
            assert [j.id for j in await a.claim({JobState.CREATED}, T0, 60, 10)] == ["free"]
    assert [j.id for j in await a.claim({JobState.CREATED}, T0, 60, 10)] == ["held"]


async def test_concurrent_saves_of_one_version_let_exactly_one_win(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    for n in range(20):
        job = await a.insert(make_job(f"job-{n}"))
        submitted = dataclasses.replace(job, state=JobState.SUBMITTED, bfl_task_id="task")
        failed = final(job)
        wins = await concurrently(
            partial(a.save, submitted), partial(b.save, failed.job, event=failed.event, sinks=SINKS)
        )
        [winner] = [saved for saved in wins if saved is not None]
        assert winner.version == 1
        assert await b.get(job.id) == winner
        has_event = winner.state is JobState.FAILED
        assert (await a.event(job.id) is not None) == has_event
        assert len(await a.deliveries(job.id)) == (len(SINKS) if has_event else 0)


async def test_concurrent_inserts_with_one_idempotency_key_make_one_job(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    for n in range(20):
        key = f"key-{n}"
        first, second = await concurrently(
            partial(a.insert, make_job(f"a-{n}", idempotency_key=key)),
            partial(b.insert, make_job(f"b-{n}", idempotency_key=key)),
        )
        assert first == second
        assert await a.get(first.id) == first
    assert await a.count({JobState.CREATED}) == 20


async def test_replicas_claiming_submits_at_once_stay_within_the_limits(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    limits = UpstreamLimits(24, tuple(CATALOG), {"flux-kontext-max": 6})
    for n in range(100):
        request = EditRequest(f"edit {n}", model="flux-kontext-max" if n % 3 == 0 else "flux-kontext-pro")
        await a.insert(make_job(f"job-{n:03}", T0 + n, request=request))

    def claimer(store: PostgresStore) -> Callable[[], Awaitable[list[Job]]]:
        return lambda: drain(lambda: store.claim_submits(T0 + 200, 60, limits))

    batches = await concurrently(*(claimer(store) for store in (a, b, a, b, a, b)))
    taken = [job for batch in batches for job in batch]
    assert len(taken) == len({job.id for job in taken}) == 24
    assert sum(job.request.model == "flux-kontext-max" for job in taken) == 6


async def test_changes_committed_by_one_replica_wake_the_other(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    seen = Seen()
    async with b.watch(seen):  # listening once entered
        await a.insert(make_job("job-1"))
        await seen.wait_for(Change.JOB_CREATED)
        job = await a.insert(make_job("job-2", state=JobState.SUBMITTED))
        report = TaskReport(Report.READY, "task-2", "Ready", sample="https://delivery.bfl.ai/s.jpg")
        await a.update(job.id, lambda j: lifecycle.reported(j, report, Via.WEBHOOK, T0 + 1, POLICY))
        await seen.wait_for(Change.RESULT_READY)
        await seen.wait_for(Change.SLOT_FREED)
        assert Change.DELIVERY_DUE not in seen.changes
        transition = final(await a.insert(make_job("job-3")))
        await a.save(transition.job, event=transition.event, sinks=SINKS)
        await seen.wait_for(Change.DELIVERY_DUE)


async def test_one_watching_replica_reports_the_figures_and_another_takes_over(
    replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = replicas
    await a.insert(make_job("job-1"))
    assert await a.figures() is None  # not watching: a web process, say
    async with a.watch(lambda change: None):
        async with b.watch(lambda change: None):
            reports = [await a.figures(), await b.figures()]
            assert reports[0] is not None and reports[0].jobs == {JobState.CREATED: 1}
            assert reports[1] is None  # so that a sum over replicas counts each job once
        figures = await a.figures()
        assert figures is not None
    async with b.watch(lambda change: None):  # the reporter stopped: its lock went with it
        assert await b.figures() is not None


async def test_a_watch_ignores_the_changes_of_other_schemas(postgres_schemas: Callable[[], str]) -> None:
    async with (
        PostgresStore.from_url(postgres_schemas()) as a,
        PostgresStore.from_url(postgres_schemas()) as b,
    ):
        seen_by_a, seen_by_b = Seen(), Seen()
        async with a.watch(seen_by_a), b.watch(seen_by_b):
            await a.insert(make_job("job-a"))
            await seen_by_a.wait_for(Change.JOB_CREATED)
            await b.insert(make_job("job-b"))
            await seen_by_b.wait_for(Change.JOB_CREATED)
        assert seen_by_a.changes == seen_by_b.changes == [Change.JOB_CREATED]


class Seen:
    """The changes a watch reported, in order; `wait_for` one with a deadline."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._arrived = anyio.Event()

    def __call__(self, change: Change) -> None:
        self.changes.append(change)
        self._arrived.set()

    async def wait_for(self, change: Change) -> None:
        with anyio.fail_after(10):
            while change not in self.changes:
                self._arrived = anyio.Event()
                await self._arrived.wait()


# --- migrations ----------------------------------------------------------------------------------------


async def test_migrations_apply_once_and_data_survives_a_reopen(postgres_schema_url: str) -> None:
    assert await migrate(postgres_schema_url) == ALL_MIGRATIONS
    assert await migrate(postgres_schema_url) == []
    async with PostgresStore.from_url(postgres_schema_url) as store:
        assert store.applied == []
        job = await store.insert(make_job("job-1", idempotency_key="key-1"))
        # A job an older version accepted: its document has no `inputs`, its base64 is in job_inputs.
        old = make_job("job-old")
        await store.pool.execute(
            "INSERT INTO jobs (id, state, model, version, due_at, created_at, doc)"
            " VALUES ($1, 'created', 'flux-kontext-pro', 0, $2, $2, $3)",
            old.id,
            T0,
            legacy_doc(old),
        )
        await store.pool.execute("INSERT INTO job_inputs (job_id, image) VALUES ($1, 'aGVsbG8=')", old.id)
    async with PostgresStore.from_url(postgres_schema_url) as store:
        assert store.applied == []
        assert await store.get("job-1") == job
        assert await store.get("job-old") == old
        assert await store.legacy_input("job-old") == "aGVsbG8="
        assert await store.legacy_input("job-1") is None
        names = await store.pool.fetch("SELECT name FROM schema_migrations ORDER BY name")
        assert [row["name"] for row in names] == ALL_MIGRATIONS


async def test_replicas_starting_together_apply_each_migration_once(postgres_schema_url: str) -> None:
    async def open_store() -> list[str]:
        async with PostgresStore.from_url(postgres_schema_url) as store:
            return store.applied

    async def run_migrate() -> list[str]:
        return await migrate(postgres_schema_url)

    results = await concurrently(open_store, run_migrate, open_store, run_migrate)
    assert sorted(results) == [[], [], [], ALL_MIGRATIONS]


async def test_stores_in_two_schemas_do_not_see_each_other(postgres_schemas: Callable[[], str]) -> None:
    async with (
        PostgresStore.from_url(postgres_schemas()) as a,
        PostgresStore.from_url(postgres_schemas()) as b,
    ):
        await a.insert(make_job("job-1"))
        assert await b.get("job-1") is None
        assert await a.get("job-1") is not None


# --- command line --------------------------------------------------------------------------------------


async def test_db_migrate_command(postgres_schema_url: str, tmp_path: Path) -> None:
    async def db_migrate(store_url: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
        result = await anyio.run_process(
            [sys.executable, "-m", "receiver", "db", "migrate"],
            cwd=tmp_path,
            env=env | {"RECEIVER_STORE_URL": store_url},
        )
        return result.stdout.decode()

    assert f"applied {ALL_MIGRATIONS[0]}" in await db_migrate(postgres_schema_url)
    assert "nothing to apply" in await db_migrate(postgres_schema_url)
    assert "ready" in await db_migrate("sqlite:///state/receiver.db")
    assert (tmp_path / "state" / "receiver.db").is_file()
