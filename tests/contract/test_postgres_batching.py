"""PostgreSQL group commit: job updates arriving together share one transaction, and so do delivery
completions."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anyio
import pytest

from receiver.models import Job, JobState, Transition
from receiver.stores import Delivery, DeliveryState, migrations
from receiver.stores.postgres import PostgresStore
from receiver.stores.urgency import urgent
from tests.contract.test_store_contract import SINKS, T0, final, make_job

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(postgres_schema_url: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore.from_url(postgres_schema_url) as opened:
        yield opened


def attempt(job: Job) -> Transition:
    return Transition(dataclasses.replace(job, attempts=job.attempts + 1))


async def test_updates_arriving_together_share_a_transaction(store: PostgresStore) -> None:
    ids = [f"job-{n}" for n in range(30)]
    for job_id in ids:
        await store.insert(make_job(job_id))
    results: dict[str, tuple[Job | None, bool]] = {}

    async def webhook(job_id: str) -> None:
        with urgent():
            results[job_id] = await store.update(job_id, final, SINKS)

    async with anyio.create_task_group() as tg:
        for job_id in ids:
            tg.start_soon(webhook, job_id)
    assert store.batches_committed <= 2  # the first alone, the others queued behind it together
    for job_id in ids:
        job, changed = results[job_id]
        assert changed and job is not None and job.state is JobState.FAILED and job.version == 1
        assert await store.get(job_id) == job
        assert len(await store.deliveries(job_id)) == len(SINKS)
        assert (await store.event(job_id)) is not None


async def test_steps_of_one_job_in_a_batch_see_each_other(store: PostgresStore) -> None:
    await store.insert(make_job("job-1"))
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(store.update, "job-1", attempt)
    job = await store.get("job-1")
    assert job is not None and (job.attempts, job.version) == (10, 10)


async def test_a_failing_step_or_a_conflict_fails_only_its_own_update(store: PostgresStore) -> None:
    for job_id in ("ok", "conflict", "raises"):
        await store.insert(make_job(job_id))
    # An event already stored for "conflict" (as if another writer had finished it by another path):
    # the batch's insert of the same event fails, and every update is run again on its own.
    await store.pool.execute(
        "INSERT INTO events (id, body) VALUES ('conflict', $1)", '{"type": "kontext.edit.failed"}'
    )

    def broken(job: Job) -> Transition:
        raise ValueError("a bug in a step")

    results: dict[str, object] = {}

    async def run(job_id: str, step: object) -> None:
        try:
            results[job_id] = await store.update(job_id, step, SINKS)  # type: ignore[arg-type]
        except Exception as exc:
            results[job_id] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "ok", final)
        tg.start_soon(run, "conflict", final)
        tg.start_soon(run, "raises", broken)
        tg.start_soon(run, "missing", final)
    ok = await store.get("ok")
    assert ok is not None and results["ok"] == (ok, True) and ok.state is JobState.FAILED
    assert isinstance(results["raises"], ValueError)
    assert results["missing"] == (None, False)
    assert isinstance(results["conflict"], Exception)  # its event exists: the write is refused
    assert (await store.get("conflict")) == make_job("conflict")  # and nothing of it was written
    assert (await store.get("raises")) == make_job("raises")


async def finished(store: PostgresStore, *ids: str) -> list[Delivery]:
    """Jobs saved as failed with their events; their pending deliveries, one per sink."""
    for job_id in ids:
        transition = final(await store.insert(make_job(job_id)))
        assert await store.save(transition.job, event=transition.event, sinks=SINKS) is not None
    return [d for job_id in ids for d in await store.deliveries(job_id)]


def published(job: Job) -> Transition:
    return Transition(dataclasses.replace(job, published_at=T0 + 9))


async def complete_all(
    store: PostgresStore, deliveries: list[Delivery], step: object = published
) -> dict[tuple[str, str], object]:
    """Complete every delivery at once: each one's answer, or what it raised."""
    answers: dict[tuple[str, str], object] = {}

    async def complete(delivery: Delivery) -> None:
        done = dataclasses.replace(delivery, state=DeliveryState.DELIVERED, delivered_at=T0 + 9)
        try:
            answers[delivery.event_id, delivery.sink] = await store.complete_delivery(
                done,
                expected_attempts=delivery.attempts,
                then=step,  # type: ignore[arg-type]
            )
        except Exception as exc:
            answers[delivery.event_id, delivery.sink] = exc

    async with anyio.create_task_group() as tg:
        for delivery in deliveries:
            tg.start_soon(complete, delivery)
    return answers


async def test_completions_arriving_together_share_a_transaction(store: PostgresStore) -> None:
    ids = [f"job-{n}" for n in range(20)]
    deliveries = await finished(store, *ids)
    answers = await complete_all(store, deliveries)
    assert answers == {(d.event_id, d.sink): True for d in deliveries}
    assert store.completion_batches_committed <= 2  # the first alone, the others queued behind it together
    for job_id in ids:
        job = await store.get(job_id)
        assert job is not None and job.published_at == T0 + 9 and job.version == 2
        assert {d.state for d in await store.deliveries(job_id)} == {DeliveryState.DELIVERED}


async def test_a_failing_step_fails_only_its_own_completion(store: PostgresStore) -> None:
    deliveries = await finished(store, "ok", "raises")

    def step(job: Job) -> Transition:
        if job.id == "raises":
            raise ValueError("a bug in a step")
        return published(job)

    answers = await complete_all(store, deliveries, step)
    ok = await store.get("ok")
    assert ok is not None and ok.published_at == T0 + 9
    assert all(answers["ok", sink] is True for sink in SINKS)
    raised = [answers["raises", sink] for sink in SINKS]  # the one that completed the event raised
    assert sum(isinstance(answer, ValueError) for answer in raised) == 1 and True in raised
    job = await store.get("raises")
    assert job is not None and job.published_at is None
    states = {d.sink: d.state for d in await store.deliveries("raises")}
    assert sorted(states.values()) == [DeliveryState.DELIVERED, DeliveryState.PENDING]  # rolled back


async def test_settled_counts_are_filled_from_the_jobs_an_older_version_stored(
    postgres_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tuple((name, sql) for name, sql in migrations.POSTGRES if "settled_counts" not in name)
    monkeypatch.setattr(migrations, "POSTGRES", before)
    async with PostgresStore.from_url(postgres_schema_url) as old:
        await old.insert(make_job("done-1", state=JobState.PUBLISHED))
        await old.insert(make_job("done-2", T0 + 1, state=JobState.PUBLISHED))
        await old.insert(make_job("running", state=JobState.SUBMITTED))
    monkeypatch.undo()
    async with PostgresStore.from_url(postgres_schema_url) as new:
        assert new.applied == ["0006_perf_settled_counts"]
        assert await new.count({JobState.PUBLISHED}) == 2
        assert await new.count({JobState.PUBLISHED, JobState.SUBMITTED}) == 3
        await new.update("running", final, SINKS)
        assert await new.count({JobState.FAILED}) == 1
