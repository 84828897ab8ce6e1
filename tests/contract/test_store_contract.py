"""One contract for every job store, subclassed per backend."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from receiver import lifecycle
from receiver.bfl.sansio import Submitted
from receiver.catalog import CATALOG
from receiver.credits import CreditBudget
from receiver.errors import UpstreamError
from receiver.models import (
    Cost,
    EditRequest,
    Event,
    ImageInfo,
    Job,
    JobState,
    StoredInput,
    Transition,
    Via,
    epoch,
    isotime,
)
from receiver.stores import Delivery, DeliveryState, Store, UpstreamLimits, store_from_url
from receiver.stores.memory import MemoryStore
from receiver.stores.rows import job_doc
from receiver.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
PRO, KONTEXT_MAX = "flux-kontext-pro", "flux-kontext-max"
POLICY = lifecycle.Policy(source="urn:kontext-receiver:test")
SINKS = ("file://events.jsonl", "stdout://")
LIMITS = UpstreamLimits(4, tuple(CATALOG), {KONTEXT_MAX: 2})
ROOMY = UpstreamLimits(24, tuple(CATALOG))
MAX = EditRequest("edit max", model=KONTEXT_MAX)


def make_job(job_id: str, created_at: float = T0, **changes: Any) -> Job:
    request = EditRequest(prompt=f"edit {job_id}", seed=3, metadata={"ticket": job_id, "tags": ["a", "b"]})
    return dataclasses.replace(lifecycle.new_job(job_id, request, created_at), **changes)


def rich_job() -> Job:
    """A job with every kind of field filled, to prove it survives the store."""
    image = ImageInfo("file:///images/j.png", "0f" * 32, 1234, "image/png", 640, 480)
    return make_job(
        "job-rich",
        request=EditRequest(
            prompt="Change the car color to red",
            model=KONTEXT_MAX,
            image_url="https://images.example/car.jpg",
            aspect_ratio="16:9",
            seed=42,
            output_format="png",
            safety_tolerance=2,
            prompt_upsampling=True,
            metadata={"order": {"id": 7, "lines": [1, 2]}, "note": "\u00e9t\u00e9 \u2603"},
        ),
        idempotency_key="idem-1",
        fingerprint="fp",
        state=JobState.STORED,
        due_at=None,
        attempts=2,
        bfl_task_id="task-1",
        polling_url="https://api.eu1.bfl.ai/v1/get_result?id=task-1",
        submitted_at=T0 + 1.25,
        sample_url="https://delivery-eu1.bfl.ai/s.png?sig=x",
        result={"seed": 42, "duration": 14.2},
        bfl_finished_at=T0 + 20,
        received_at=T0 + 21,
        via=Via.POLL,
        stored_at=T0 + 22,
        image=image,
        inputs=(
            StoredInput("job-rich.input-0.png", "1a" * 32, 2048, "image/png", 96, 64),
            StoredInput(
                "job-rich.input-1.jpg", "2b" * 32, 4096, "image/jpeg", 64, 96, "https://images.example/b.jpg"
            ),
        ),
        error={"code": "none", "detail": [1, "two"]},
        finished_at=T0 + 22,
    )


def test_a_stored_input_from_before_source_urls_reads_back_without_one() -> None:
    doc = rich_job().to_doc()
    for item in doc["inputs"]:
        del item["source_url"]
    assert [item.source_url for item in Job.from_doc(doc).inputs] == [None, None]


def final(job: Job, at: float = T0 + 30) -> Transition:
    """The job failing now: a transition that carries its event."""
    transition = lifecycle.finish(job, JobState.FAILED, at, POLICY, error={"code": "test"})
    assert transition.event is not None
    return transition


class StoreContract:
    """Every backend's test class subclasses this and provides an open, empty store as the `store` fixture,
    and `twin`, another handle on the same store."""

    async def finished(self, store: Store, job_id: str, created_at: float = T0) -> tuple[Job, Event]:
        """Insert a job and save it as failed, with its event and a pending delivery per sink."""
        job = await store.insert(make_job(job_id, created_at))
        transition = final(job)
        saved = await store.save(transition.job, event=transition.event, sinks=SINKS)
        assert saved is not None and transition.event is not None
        return saved, transition.event

    # --- jobs --------------------------------------------------------------------------------------------

    async def test_insert_then_get_round_trips_every_field(self, store: Store) -> None:
        job = rich_job()
        assert await store.insert(job) == job
        assert await store.get(job.id) == job
        assert await store.get("no-such-job") is None

    async def test_idempotency_key_returns_the_first_job(self, store: Store) -> None:
        inputs = (StoredInput("job-1.input-0.png", "1a" * 32, 2048, "image/png", 96, 64),)
        first = await store.insert(make_job("job-1", idempotency_key="key-1", inputs=inputs))
        again = await store.insert(make_job("job-2", T0 + 5, idempotency_key="key-1"))
        assert again == first and again.inputs == inputs
        assert await store.get("job-2") is None
        other = await store.insert(make_job("job-3", idempotency_key="key-2"))
        assert other.id == "job-3"
        assert await store.keyed("key-1") == first and await store.keyed("key-2") == other
        assert await store.keyed("key-3") is None

    async def test_a_new_job_has_no_legacy_input(self, store: Store) -> None:
        await store.insert(rich_job())
        assert await store.legacy_input("job-rich") is None

    async def saved(self, store: Store, job: Job, **kwargs: Any) -> Job:
        result = await store.save(job, **kwargs)
        assert result is not None, "save lost a race nobody ran"
        return result

    async def test_save_is_compare_and_set_on_the_version(self, store: Store) -> None:
        job = await store.insert(make_job("job-1"))
        first = await self.saved(store, dataclasses.replace(job, state=JobState.SUBMITTED))
        assert first.version == job.version + 1
        assert await store.save(dataclasses.replace(job, state=JobState.FAILED)) is None  # stale
        assert await store.get("job-1") == first
        second = await self.saved(store, dataclasses.replace(first, bfl_task_id="task-1"))
        assert second.version == job.version + 2
        assert await store.get("job-1") == second

    async def test_save_of_an_unknown_job_is_refused(self, store: Store) -> None:
        assert await store.save(make_job("ghost")) is None
        assert await store.get("ghost") is None

    # --- retention ----------------------------------------------------------------------------------

    async def settle(self, store: Store, job_id: str, state: DeliveryState) -> None:
        """Every delivery of the job's event delivered (or dead-lettered)."""
        for delivery in await store.deliveries(job_id):
            settled = dataclasses.replace(delivery, state=state, attempts=delivery.attempts + 1)
            assert await store.save_delivery(settled, expected_attempts=delivery.attempts)

    async def test_expired_jobs_are_old_final_and_delivered_oldest_first(self, store: Store) -> None:
        for n, state in enumerate([DeliveryState.DELIVERED, DeliveryState.DEAD, DeliveryState.DELIVERED]):
            await self.finished(store, f"old-{n}", created_at=T0 + n)
            await self.settle(store, f"old-{n}", state)
        await self.finished(store, "old-pending", created_at=T0)  # its event is still to be delivered
        await store.insert(make_job("old-created", T0))  # still in flight
        await self.finished(store, "new", created_at=T0 + 100)
        await self.settle(store, "new", DeliveryState.DELIVERED)
        assert [job.id for job in await store.expired_jobs(T0 + 50, 10)] == ["old-0", "old-1", "old-2"]
        assert [job.id for job in await store.expired_jobs(T0 + 50, 2)] == ["old-0", "old-1"]
        assert [job.id for job in await store.expired_jobs(T0 + 1, 10)] == ["old-0"]

    async def test_delete_jobs_takes_their_events_and_deliveries_with_them(self, store: Store) -> None:
        await self.finished(store, "job-1")
        await self.finished(store, "job-2")
        first = await store.insert(make_job("job-3", idempotency_key="key-3"))
        assert await store.delete_jobs(["job-1", "job-3", "ghost"]) == 2
        assert await store.get("job-1") is None and await store.event("job-1") is None
        assert await store.deliveries("job-1") == []
        assert await store.get("job-3") is None
        assert await store.get("job-2") is not None and len(await store.deliveries("job-2")) == len(SINKS)
        again = await store.insert(make_job("job-4", idempotency_key="key-3"))  # the key is free again
        assert again.id == "job-4" != first.id
        assert await store.delete_jobs([]) == 0

    # --- events and deliveries ----------------------------------------------------------------------

    async def test_save_with_an_event_writes_it_and_one_delivery_per_sink(self, store: Store) -> None:
        job, event = await self.finished(store, "job-1")
        assert job.state is JobState.FAILED
        assert await store.event("job-1") == event
        assert await store.deliveries("job-1") == [Delivery("job-1", sink) for sink in sorted(SINKS)]
        assert await store.event("job-2") is None
        assert await store.deliveries("job-2") == []

    async def test_deliveries_of_many_events_in_one_read(self, store: Store) -> None:
        for job_id in ("job-1", "job-2"):
            await self.finished(store, job_id)
        await store.insert(make_job("job-3"))  # no event yet
        [first, _] = await store.deliveries("job-1")
        dead = dataclasses.replace(first, state=DeliveryState.DEAD, attempts=12, last_error="gone")
        assert await store.save_delivery(dead, expected_attempts=0)
        found = await store.deliveries_of(["job-2", "job-1", "job-3", "no-such-job"])
        assert found == {
            "job-1": await store.deliveries("job-1"),
            "job-2": await store.deliveries("job-2"),
            "job-3": [],
            "no-such-job": [],
        }
        assert found["job-1"][0] == dead and [d.sink for d in found["job-2"]] == sorted(SINKS)
        assert await store.deliveries_of([]) == {}

    async def test_a_second_event_with_the_same_id_is_refused(self, store: Store) -> None:
        job, event = await self.finished(store, "job-1")
        again = final(job, at=T0 + 99)
        assert await store.save(again.job, event=again.event, sinks=(*SINKS, "http://other")) is None
        assert await store.get("job-1") == job  # nothing of the losing write is kept
        assert await store.event("job-1") == event
        assert [d.sink for d in await store.deliveries("job-1")] == sorted(SINKS)

    async def test_claim_deliveries_and_compare_and_set_on_attempts(self, store: Store) -> None:
        await self.finished(store, "job-1")
        [first] = await store.claim_deliveries(T0, 30, 1, SINKS)
        [second] = await store.claim_deliveries(T0, 30, 10, SINKS)
        assert {first.sink, second.sink} == set(SINKS)
        assert (first.attempts, first.next_at) == (1, T0 + 30)
        assert await store.claim_deliveries(T0 + 29, 30, 10, SINKS) == []  # both held

        retry = dataclasses.replace(first, next_at=T0 + 5, last_error="connection refused")
        assert await store.save_delivery(retry, expected_attempts=1) is True
        assert await store.save_delivery(retry, expected_attempts=0) is False  # someone else got there
        [again] = await store.claim_deliveries(T0 + 5, 30, 10, SINKS)
        assert (again.sink, again.attempts) == (first.sink, 2)

        delivered = dataclasses.replace(
            again, state=DeliveryState.DELIVERED, last_error=None, delivered_at=T0 + 6
        )
        assert await store.save_delivery(delivered, expected_attempts=2) is True
        assert delivered in await store.deliveries("job-1")
        assert [d.sink for d in await store.claim_deliveries(T0 + 1000, 30, 10, SINKS)] == [second.sink]
        assert await store.save_delivery(Delivery("nope", "stdout://"), expected_attempts=0) is False

    async def test_completing_the_last_delivery_applies_the_step_to_the_job(self, store: Store) -> None:
        await self.finished(store, "job-1")
        first, second = await store.deliveries("job-1")

        def note(job: Job) -> Transition:
            return Transition(dataclasses.replace(job, published_at=T0 + 9))

        def done(delivery: Delivery) -> Delivery:
            return dataclasses.replace(delivery, state=DeliveryState.DELIVERED, delivered_at=T0 + 9)

        assert await store.complete_delivery(done(first), expected_attempts=0, then=note)
        job = await store.get("job-1")
        assert job is not None and job.published_at is None  # one sink still to go
        assert not await store.complete_delivery(done(second), expected_attempts=5, then=note)  # lost race
        assert await store.complete_delivery(done(second), expected_attempts=0, then=note)
        job = await store.get("job-1")
        assert job is not None and job.published_at == T0 + 9
        assert {d.state for d in await store.deliveries("job-1")} == {DeliveryState.DELIVERED}

    async def test_completions_arriving_together_apply_each_event_step_once(self, store: Store) -> None:
        """Every sink of several events completed at once (with a stale one among them): each event's
        step is applied once, after its last delivery, and the stale completion changes nothing."""
        ids = [f"job-{n}" for n in range(6)]
        for job_id in ids:
            await self.finished(store, job_id)
        deliveries = [d for job_id in ids for d in await store.deliveries(job_id)]
        steps: list[str] = []

        def publish(job: Job) -> Transition:
            steps.append(job.id)
            return Transition(dataclasses.replace(job, published_at=T0 + 9))

        answers: dict[tuple[str, str, int], bool] = {}

        async def complete(delivery: Delivery, expected_attempts: int) -> None:
            done = dataclasses.replace(delivery, state=DeliveryState.DELIVERED, delivered_at=T0 + 9)
            answer = await store.complete_delivery(done, expected_attempts=expected_attempts, then=publish)
            answers[delivery.event_id, delivery.sink, expected_attempts] = answer

        async with anyio.create_task_group() as tg:
            for delivery in deliveries:
                tg.start_soon(complete, delivery, 0)
            tg.start_soon(complete, deliveries[0], 7)  # a claim since lost
        assert answers == {(d.event_id, d.sink, 0): True for d in deliveries} | {
            (deliveries[0].event_id, deliveries[0].sink, 7): False
        }
        assert sorted(steps) == ids
        for job_id in ids:
            job = await store.get(job_id)
            assert job is not None and job.published_at == T0 + 9
            assert {d.state for d in await store.deliveries(job_id)} == {DeliveryState.DELIVERED}

    async def test_claim_deliveries_only_for_the_given_sinks(self, store: Store) -> None:
        await self.finished(store, "job-1")
        [only] = await store.claim_deliveries(T0, 30, 10, ["stdout://", "http://elsewhere"])
        assert only.sink == "stdout://"
        assert await store.claim_deliveries(T0, 30, 10, ["http://elsewhere"]) == []

    async def test_claim_deliveries_earliest_first(self, store: Store) -> None:
        for job_id, next_at in (("job-a", T0 + 3), ("job-b", T0 + 1), ("job-c", T0 + 2)):
            await self.finished(store, job_id)
            for delivery in await store.deliveries(job_id):
                await store.save_delivery(dataclasses.replace(delivery, next_at=next_at), expected_attempts=0)
        due = await store.claim_deliveries(T0 + 10, 30, 4, SINKS)
        assert [d.event_id for d in due] == ["job-b", "job-b", "job-c", "job-c"]

    async def test_redeliver_resets_every_sink_to_pending(self, store: Store) -> None:
        await self.finished(store, "job-1")
        for delivery in await store.deliveries("job-1"):
            dead = dataclasses.replace(delivery, state=DeliveryState.DEAD, attempts=9, last_error="gone")
            assert await store.save_delivery(dead, expected_attempts=0)
        sinks = (*SINKS, "http://new-sink")
        assert await store.redeliver("job-1", sinks, T0 + 50) == 3
        assert await store.deliveries("job-1") == [
            Delivery("job-1", s, next_at=T0 + 50) for s in sorted(sinks)
        ]
        assert len(await store.claim_deliveries(T0 + 50, 30, 10, sinks)) == 3

    async def test_redeliver_without_an_event_does_nothing(self, store: Store) -> None:
        await store.insert(make_job("job-1"))
        assert await store.redeliver("job-1", SINKS, T0) == 0
        assert await store.redeliver("no-such-job", SINKS, T0) == 0
        assert await store.deliveries("job-1") == []

    # --- queries ---------------------------------------------------------------------------------------

    async def test_claim_takes_due_jobs_earliest_first(self, store: Store) -> None:
        for job_id, state, due_at in [
            ("late", JobState.CREATED, T0 + 3),
            ("early", JobState.CREATED, T0 + 1),
            ("middle", JobState.SUBMITTED, T0 + 2),
            ("exactly-now", JobState.CREATED, T0 + 10),
            ("future", JobState.CREATED, T0 + 11),
            ("never", JobState.CREATED, None),
            ("received", JobState.RECEIVED, T0),
        ]:
            await store.insert(make_job(job_id, state=state, due_at=due_at))
        both = {JobState.CREATED, JobState.SUBMITTED}
        first = await store.claim(both, T0 + 10, 60, 2)
        assert [j.id for j in first] == ["early", "middle"]
        rest = await store.claim(both, T0 + 10, 60, 10)
        assert [j.id for j in rest] == ["late", "exactly-now"]
        assert await store.claim(both, T0 + 10, 60, 10) == []  # all held now
        assert await store.claim({JobState.PUBLISHED}, T0 + 100, 60, 10) == []

    async def test_a_claim_pushes_the_lease_bumps_the_version_and_counts_the_attempt(
        self, store: Store
    ) -> None:
        job = await store.insert(make_job("job-1", due_at=T0))
        [claimed] = await store.claim({JobState.CREATED}, T0 + 5, 60, 10)
        assert claimed == dataclasses.replace(job, due_at=T0 + 65, attempts=1, version=job.version + 1)
        assert await store.get("job-1") == claimed
        assert await store.save(job) is None  # a writer holding the unclaimed version loses
        assert await store.claim({JobState.CREATED}, T0 + 64, 60, 10) == []
        [again] = await store.claim({JobState.CREATED}, T0 + 65, 60, 10)  # the lease ran out
        assert again.attempts == 2

    async def test_claim_by_model(self, store: Store) -> None:
        await store.insert(make_job("pro", due_at=T0))
        await store.insert(make_job("max", due_at=T0, request=MAX))
        assert [j.id for j in await store.claim({JobState.CREATED}, T0, 60, 10, KONTEXT_MAX)] == ["max"]
        assert [j.id for j in await store.claim({JobState.CREATED}, T0, 60, 10, PRO)] == ["pro"]

    async def test_claim_submits_fills_the_free_upstream_slots_max_first(self, store: Store) -> None:
        for n in range(3):
            await store.insert(make_job(f"pro-{n}", T0 + n))
            await store.insert(make_job(f"max-{n}", T0 + n, request=MAX))
        claimed = await store.claim_submits(T0 + 10, 60, LIMITS)
        assert [j.id for j in claimed] == ["max-0", "max-1", "pro-0", "pro-1"]
        assert all(j.submitting_until == T0 + 70 and j.due_at == T0 + 70 for j in claimed)
        assert await store.get("max-0") == claimed[0]
        assert await store.claim_submits(T0 + 11, 60, LIMITS) == []  # every slot is held

    async def test_claim_submits_counts_submitted_and_claimed_jobs(self, store: Store) -> None:
        await store.insert(make_job("on-bfl", state=JobState.SUBMITTED, request=MAX))
        await store.insert(make_job("submitting", due_at=T0 + 50, submitting_until=T0 + 50))
        await store.insert(make_job("backing-off", due_at=T0 + 50))  # a 429 retried later
        for n in range(4):
            await store.insert(make_job(f"max-{n}", T0 + n, request=MAX))
        await store.insert(make_job("pro", T0 + 5))
        claimed = await store.claim_submits(T0 + 10, 60, LIMITS)
        assert [j.id for j in claimed] == ["max-0", "pro"]  # 4 in all, 2 of them max
        assert await store.claim_submits(T0 + 10, 60, LIMITS) == []

    async def test_a_submit_claim_stops_counting_when_its_outcome_is_written(self, store: Store) -> None:
        for n in range(5):
            await store.insert(make_job(f"job-{n}", T0 + n))
        first, *_ = await store.claim_submits(T0 + 10, 60, LIMITS)
        refused = UpstreamError(429, "busy", retryable=True)
        await store.update(first.id, lambda j: lifecycle.submit_refused(j, refused, T0 + 11, POLICY))
        [next_one] = await store.claim_submits(T0 + 12, 60, LIMITS)  # the refused job's slot is free
        assert next_one.id == "job-4"
        accepted = Submitted("task-4", "https://api.bfl.ai/v1/get_result?id=task-4")
        await store.update(next_one.id, lambda j: lifecycle.submitted(j, accepted, T0 + 13, POLICY))
        assert await store.claim_submits(T0 + 14, 60, LIMITS) == []  # submitted: still active upstream

    async def test_a_submit_claim_lapses_with_its_lease(self, store: Store) -> None:
        for n in range(5):
            await store.insert(make_job(f"job-{n}", T0 + n))
        assert len(await store.claim_submits(T0 + 10, 60, LIMITS)) == 4
        assert await store.claim_submits(T0 + 69, 60, LIMITS) == []
        # The claimer died: at the end of its lease its slots are free, and its jobs due again.
        again = await store.claim_submits(T0 + 70, 60, LIMITS)
        assert [j.id for j in again] == ["job-4", "job-0", "job-1", "job-2"]

    async def test_a_submit_claim_keeps_to_the_credit_budget_and_holds_what_does_not_fit(
        self, store: Store
    ) -> None:
        for job_id, submitted_at, cost in [("today", T0 - 50, 3.0), ("yesterday", T0 - 200, 100.0)]:
            job = make_job(job_id, state=JobState.PUBLISHED, submitted_at=submitted_at, cost=Cost(cost))
            await store.insert(job)
        claiming = make_job("claiming", due_at=T0 + 500, submitting_until=T0 + 50, credit_estimate=2.0)
        lapsed = make_job("lapsed", due_at=T0 + 500, submitting_until=T0 - 1, credit_estimate=50.0)
        for job in (claiming, lapsed):
            await store.insert(job)
        costs = {"a": 4.0, "b": 4.0, "c": 1.0}
        for n, job_id in enumerate(costs):
            await store.insert(make_job(job_id, T0 + n))
        budget = CreditBudget(10.0, T0 - 100, T0 + 100, lambda job: costs[job.id])

        # Spent: 3 today + 2 claimed = 5; a makes it 9, b would pass 10, c reaches it.
        claimed = await store.claim_submits(T0 + 10, 60, ROOMY, budget)

        assert [(j.id, j.credit_estimate, j.submitting_until) for j in claimed] == [
            ("a", 4.0, T0 + 70),
            ("c", 1.0, T0 + 70),
        ]
        assert await store.get("a") == claimed[0]
        held = await store.get("b")
        assert held is not None and held.hold is not None
        assert (held.state, held.due_at, held.submitting_until) == (JobState.CREATED, T0 + 100, None)
        assert held.hold["code"] == "credit_cap" and held.hold["until"] == isotime(T0 + 100)
        assert "today's spend of 9 credits plus this edit's 4" in held.hold["message"]
        assert await store.claim_submits(T0 + 11, 60, ROOMY, budget) == []
        for job in claimed:
            await store.update(job.id, recorded_submit(job, T0 + 12))
        assert await store.credits_spent(T0 - 100, T0 + 100) == 8.0  # 3, and the estimates of a and c
        # The next day has a budget of its own.
        tomorrow = CreditBudget(10.0, T0 + 100, T0 + 200, lambda job: costs[job.id])
        assert [j.id for j in await store.claim_submits(T0 + 100, 60, ROOMY, tomorrow)] == ["b"]

    async def test_claimers_sharing_a_store_keep_to_the_cap_together(self, store: Store, twin: Store) -> None:
        """Two handles on one store (two processes on one SQLite file, two replicas on one PostgreSQL
        schema) claim, submit and finish edits at once, one slot each: the cap allows 3 edits in all."""
        for n in range(10):
            await store.insert(make_job(f"job-{n}", T0 + n))
        budget = CreditBudget(12.0, T0 - 100, T0 + 100, lambda job: 4.0)
        one_slot = UpstreamLimits(1, tuple(CATALOG))
        submitted: list[str] = []

        async def submitter(claimer: Store) -> None:
            while claimed := await claimer.claim_submits(T0 + 20, 60, one_slot, budget):
                for job in claimed:
                    await claimer.update(job.id, recorded_submit(job, T0 + 21))
                    await claimer.update(job.id, final)  # its slot is free again; its cost stays spent
                    submitted.append(job.id)

        async with anyio.create_task_group() as tg:
            for claimer in (store, twin, store, twin):
                tg.start_soon(submitter, claimer)

        assert len(submitted) == len(set(submitted)) == 3
        assert await store.credits_spent(T0 - 100, T0 + 100) == 12.0
        jobs = [await store.get(f"job-{n}") for n in range(10)]
        held = [job for job in jobs if job is not None and job.hold is not None]
        assert len(held) == 7 and {job.id for job in held}.isdisjoint(submitted)
        assert all(job.state is JobState.CREATED and job.due_at == T0 + 100 for job in held)

    async def test_racing_submit_claims_never_exceed_the_limits(self, store: Store) -> None:
        for n in range(12):
            await store.insert(make_job(f"job-{n}", T0 + n, request=MAX if n % 2 else EditRequest("p")))
        claimed: list[Job] = []

        async def claim() -> None:
            claimed.extend(await store.claim_submits(T0 + 20, 60, LIMITS))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(claim)
        assert len(claimed) == 4 and len({j.id for j in claimed}) == 4
        assert sum(j.request.model == KONTEXT_MAX for j in claimed) == 2

    async def test_figures_count_jobs_per_state_and_undelivered_events_per_sink(self, store: Store) -> None:
        await store.insert(make_job("queued"))
        await store.insert(make_job("on-bfl", state=JobState.SUBMITTED))
        _, first = await self.finished(store, "failed-1", T0)
        await self.finished(store, "failed-2", T0 + 1)
        [claimed] = await store.claim_deliveries(T0 + 100, 60, 1, ["stdout://"])  # in flight: still owed
        await store.save_delivery(
            dataclasses.replace(claimed, state=DeliveryState.DELIVERED), expected_attempts=claimed.attempts
        )
        async with store.watch(lambda change: None):  # PostgreSQL: the watching replica reports
            figures = await store.figures()
        assert figures is not None
        assert dict(figures.jobs) == {JobState.CREATED: 1, JobState.SUBMITTED: 1, JobState.FAILED: 2}
        oldest = epoch(first.time)
        assert dict(figures.outbox) == {"file://events.jsonl": (2, oldest), "stdout://": (1, oldest)}

    async def test_count_by_state_and_model(self, store: Store) -> None:
        for job_id, state, model in [
            ("a", JobState.CREATED, PRO),
            ("b", JobState.SUBMITTED, PRO),
            ("c", JobState.SUBMITTED, KONTEXT_MAX),
            ("d", JobState.SUBMITTED, KONTEXT_MAX),
            ("e", JobState.PUBLISHED, KONTEXT_MAX),
        ]:
            request = EditRequest(prompt="p", model=model)
            await store.insert(make_job(job_id, state=state, request=request))
        active = {JobState.CREATED, JobState.SUBMITTED}
        assert await store.count(active) == 4
        assert await store.count(active, KONTEXT_MAX) == 2
        assert await store.count(active, PRO) == 2
        assert await store.count({JobState.PUBLISHED}, PRO) == 0
        assert await store.count({JobState.FAILED}) == 0
        assert await store.count({*active, JobState.PUBLISHED}) == 5

    async def test_settled_jobs_are_counted_once_whichever_write_settles_them(self, store: Store) -> None:
        """The SQL stores count settled jobs from counters their triggers keep, not from the rows."""
        await store.insert(make_job("inserted", state=JobState.PUBLISHED))
        await store.insert(make_job("updated"))
        await store.update("updated", final, SINKS)
        await self.finished(store, "saved")
        stored = await store.insert(make_job("published", state=JobState.STORED, image=None))
        event = lifecycle.build_event(stored, POLICY.source)
        stored = await self.saved(store, stored, event=event, sinks=SINKS[:1])
        delivery = dataclasses.replace(
            (await store.deliveries("published"))[0], state=DeliveryState.DELIVERED, delivered_at=T0 + 9
        )
        then = lambda job: lifecycle.published(job, T0 + 9)  # noqa: E731
        assert await store.complete_delivery(delivery, expected_attempts=0, then=then)
        # A settled job written again in the same state is not counted twice.
        await store.update("updated", lambda job: Transition(dataclasses.replace(job, attempts=7)))
        assert await store.count({JobState.PUBLISHED}) == 2
        assert await store.count({JobState.FAILED}) == 2
        assert await store.count({JobState.FAILED, JobState.PUBLISHED, JobState.CREATED}) == 4
        assert await store.count({JobState.FAILED}, KONTEXT_MAX) == 0
        assert await store.count({JobState.STORED}) == 0

    async def test_credits_spent_sums_the_costs_of_jobs_submitted_in_the_window(self, store: Store) -> None:
        for job_id, submitted_at, cost in [
            ("before", T0 - 0.001, Cost(4.0)),
            ("first", T0, Cost(4.5, 1.02, 1.0)),
            ("last", T0 + 99.9, Cost(10.0)),
            ("free", T0 + 5, None),
            ("after", T0 + 100, Cost(8.0)),
        ]:
            job = make_job(job_id, state=JobState.SUBMITTED)
            await store.insert(dataclasses.replace(job, submitted_at=submitted_at, cost=cost))
        await store.insert(make_job("queued"))
        assert await store.credits_spent(T0, T0 + 100) == pytest.approx(14.5)
        assert await store.credits_spent(T0 + 200, T0 + 300) == 0.0

    async def test_list_jobs_newest_first_with_filters_and_paging(self, store: Store) -> None:
        for n in range(5):
            state = JobState.SUBMITTED if n % 2 else JobState.CREATED
            await store.insert(make_job(f"job-{n}", T0 + n, state=state))
        assert [j.id for j in await store.list_jobs()] == ["job-4", "job-3", "job-2", "job-1", "job-0"]
        assert [j.id for j in await store.list_jobs(state=JobState.SUBMITTED)] == ["job-3", "job-1"]
        assert [j.id for j in await store.list_jobs(limit=2, offset=1)] == ["job-3", "job-2"]
        assert await store.list_jobs(offset=5) == []

    async def test_list_jobs_dead_letter_keeps_jobs_with_a_dead_delivery(self, store: Store) -> None:
        await self.finished(store, "ok", T0)
        await self.finished(store, "dead-1", T0 + 1)
        await self.finished(store, "dead-2", T0 + 2)
        for job_id in ("dead-1", "dead-2"):
            delivery = (await store.deliveries(job_id))[0]
            dead = dataclasses.replace(delivery, state=DeliveryState.DEAD, attempts=1)
            assert await store.save_delivery(dead, expected_attempts=0)
        assert [j.id for j in await store.list_jobs(dead_letter=True)] == ["dead-2", "dead-1"]
        assert await store.list_jobs(dead_letter=True, state=JobState.CREATED) == []

    # --- update ----------------------------------------------------------------------------------------

    async def test_update_writes_the_step_and_its_event_with_deliveries(self, store: Store) -> None:
        await store.insert(make_job("job-1"))
        job, changed = await store.update("job-1", final, SINKS)
        assert changed and job is not None and job.state is JobState.FAILED and job.version == 1
        assert await store.get("job-1") == job
        assert (event := await store.event("job-1")) is not None and event.type == "kontext.edit.failed"
        assert len(await store.deliveries("job-1")) == len(SINKS)

    async def test_update_can_write_deliveries_already_claimed_by_the_writer(self, store: Store) -> None:
        await store.insert(make_job("job-1"))
        _, changed = await store.update("job-1", final, SINKS, claimed_until=T0 + 60)
        assert changed
        assert await store.deliveries("job-1") == [
            Delivery("job-1", s, attempts=1, next_at=T0 + 60) for s in sorted(SINKS)
        ]
        assert await store.claim_deliveries(T0 + 59, 30, 10, SINKS) == []  # the writer delivers them
        assert len(await store.claim_deliveries(T0 + 60, 30, 10, SINKS)) == len(SINKS)  # unless it died

    async def test_update_with_nothing_to_do_or_no_job(self, store: Store) -> None:
        inserted = await store.insert(make_job("job-1"))
        assert await store.update("job-1", lambda job: None) == (inserted, False)
        assert await store.update("no-such-job", final) == (None, False)
        assert await store.get("job-1") == inserted

    async def test_concurrent_updates_of_a_job_are_serialized(self, store: Store) -> None:
        """No lost update: each step sees the one before it."""
        await store.insert(make_job("job-1"))

        def count(job: Job) -> Transition:
            return Transition(dataclasses.replace(job, attempts=job.attempts + 1))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(store.update, "job-1", count)
        job = await store.get("job-1")
        assert job is not None and (job.attempts, job.version) == (20, 20)

    async def test_racing_final_steps_produce_exactly_one_outcome(self, store: Store) -> None:
        await store.insert(make_job("job-1"))
        results: list[bool] = []

        async def finish() -> None:
            results.append((await store.update("job-1", final_once, SINKS))[1])

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(finish)
        assert sorted(results) == [False] * 9 + [True]
        assert len(await store.deliveries("job-1")) == len(SINKS)


def recorded_submit(claimed: Job, at: float) -> Callable[[Job], Transition]:
    """BFL took the claimed job's edit, which costs what the claim expected."""
    accepted = Submitted(f"task-{claimed.id}", f"https://api.bfl.ai/v1/get_result?id=task-{claimed.id}")
    return lambda job: lifecycle.submitted(job, accepted, at, POLICY, estimate=claimed.credit_estimate)


def final_once(job: Job) -> Transition | None:
    """Finish a job that is not finished yet (as every lifecycle step does: only from its own state)."""
    return final(job) if job.state is JobState.CREATED else None


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        async with MemoryStore() as store:
            yield store

    @pytest.fixture
    def twin(self, store: Store) -> Store:
        return store  # nothing else can share it


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        async with SQLiteStore(str(tmp_path / "receiver.db")) as store:
            yield store

    @pytest.fixture
    async def twin(self, store: Store, tmp_path: Path) -> AsyncIterator[Store]:
        """Another process's handle on the same file: a writer thread and file lock of its own."""
        async with SQLiteStore(str(tmp_path / "receiver.db")) as twin:
            yield twin

    async def test_data_survives_close_and_reopen(self, tmp_path: Path) -> None:
        path = str(tmp_path / "state" / "receiver.db")
        async with SQLiteStore(path) as store:
            job = await store.insert(rich_job())
            saved, event = await self.finished(store, "job-1")
        async with SQLiteStore.from_url(f"sqlite:///{path}") as reopened:
            assert await reopened.get(job.id) == job
            assert await reopened.get("job-1") == saved
            assert await reopened.event("job-1") == event
            assert len(await reopened.deliveries("job-1")) == len(SINKS)

    async def test_a_database_from_before_blob_inputs_still_serves_its_queued_jobs(
        self, tmp_path: Path
    ) -> None:
        """Jobs accepted by an older version keep their base64 input in `job_inputs` until submit."""
        path = tmp_path / "receiver.db"
        job = make_job("job-old")
        with sqlite3.connect(path) as conn:
            conn.executescript(OLD_SQLITE_SCHEMA)
            conn.execute(
                "INSERT INTO jobs (id, state, model, version, due_at, created_at, doc)"
                " VALUES (?, 'created', 'flux-kontext-pro', 0, ?, ?, ?)",
                (job.id, T0, T0, legacy_doc(job)),
            )
            conn.execute("INSERT INTO job_inputs (job_id, image) VALUES (?, ?)", (job.id, "aGVsbG8="))
        async with SQLiteStore(str(path)) as store:
            assert await store.get(job.id) == job and job.inputs == ()
            assert await store.legacy_input(job.id) == "aGVsbG8="
            await store.save(dataclasses.replace(job, state=JobState.SUBMITTED), drop_input=True)
            assert await store.legacy_input(job.id) is None
            assert await store.insert(rich_job()) == rich_job()

    async def test_a_write_is_answered_once_the_wal_holding_it_is_on_disk(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Commits do not fsync under the write lock (synchronous=NORMAL); the writer flushes the WAL
        itself before it answers."""
        path = tmp_path / "receiver.db"
        flushed: list[str] = []
        fdatasync = os.fdatasync

        def recording(fd: int) -> None:
            fdatasync(fd)
            flushed.append(os.readlink(f"/proc/self/fd/{fd}"))

        async with SQLiteStore(str(path)) as store:
            monkeypatch.setattr(os, "fdatasync", recording)
            await store.insert(make_job("job-1"))
            assert flushed == [f"{path}-wal"]
            await store.update("job-1", lambda job: Transition(dataclasses.replace(job, attempts=1)))
            assert flushed == [f"{path}-wal"] * 2

    async def test_two_stores_on_one_file_serialize_their_updates(self, tmp_path: Path) -> None:
        """As the processes of a multi-process `serve` do: each its own writer, one database file."""
        path = str(tmp_path / "receiver.db")
        async with SQLiteStore(path) as a, SQLiteStore(path) as b:
            await a.insert(make_job("job-1"))

            def attempt(job: Job) -> Transition:
                return Transition(dataclasses.replace(job, attempts=job.attempts + 1))

            async with anyio.create_task_group() as tg:
                for n in range(40):
                    tg.start_soon((a if n % 2 else b).update, "job-1", attempt)
            job = await b.get("job-1")
            assert job is not None and (job.attempts, job.version) == (40, 40)

    async def test_a_database_from_before_settled_counts_counts_its_finished_jobs(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "receiver.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(OLD_SQLITE_SCHEMA)
            for job_id, state in [("done-1", "published"), ("done-2", "published"), ("live", "submitted")]:
                conn.execute(
                    "INSERT INTO jobs (id, state, model, version, created_at, doc)"
                    " VALUES (?, ?, 'flux-kontext-pro', 0, ?, ?)",
                    (job_id, state, T0, job_doc(make_job(job_id, state=JobState(state)))),
                )
        for _ in range(2):  # counted once, however often the file is opened
            async with SQLiteStore(str(path)) as store:
                assert await store.count({JobState.PUBLISHED}) == 2
                assert await store.count({JobState.PUBLISHED, JobState.SUBMITTED}) == 3

    async def test_a_database_of_an_earlier_release_can_count_upstream_slots(self, tmp_path: Path) -> None:
        path = tmp_path / "receiver.db"
        job = make_job("job-old")
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.executescript(OLD_SQLITE_SCHEMA)
            conn.execute(
                "INSERT INTO jobs (id, state, model, version, due_at, created_at, doc)"
                " VALUES (?, 'created', 'flux-kontext-pro', 0, ?, ?, ?)",
                (job.id, T0, T0, legacy_doc(job)),
            )
        async with SQLiteStore(str(path)) as store:
            [claimed] = await store.claim_submits(T0 + 1, 60, LIMITS)
            assert claimed.submitting_until == T0 + 61
            assert await store.claim_submits(T0 + 2, 60, LIMITS) == []

    async def test_a_database_of_an_earlier_release_gets_the_index_of_submit_times(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "receiver.db"
        job = make_job("job-old", state=JobState.PUBLISHED, submitted_at=T0, cost=Cost(4.0))
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            conn.executescript(OLD_SQLITE_SCHEMA)
            conn.execute(
                "INSERT INTO jobs (id, state, model, version, created_at, doc)"
                " VALUES (?, 'published', 'flux-kontext-pro', 0, ?, ?)",
                (job.id, T0, legacy_doc(job)),
            )
        async with SQLiteStore(str(path)) as store:
            assert await store.credits_spent(T0, T0 + 1) == 4.0
        with contextlib.closing(sqlite3.connect(path)) as conn:
            indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "jobs_submitted" in indexes


def legacy_doc(job: Job) -> str:
    """`job` as an older version wrote it: no `inputs` in the document."""
    doc = json.loads(job_doc(job))
    del doc["inputs"]
    return json.dumps(doc)


# The schema as it shipped before input images went to the blob store.
OLD_SQLITE_SCHEMA = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE, due_at REAL, created_at REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX jobs_due ON jobs (state, due_at);
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_state_model ON jobs (state, model);
CREATE TABLE job_inputs (job_id TEXT PRIMARY KEY, image TEXT NOT NULL);
CREATE TABLE events (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE deliveries (event_id TEXT NOT NULL, sink TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL, next_at REAL NOT NULL, last_error TEXT, delivered_at REAL,
    PRIMARY KEY (event_id, sink));
CREATE INDEX deliveries_due ON deliveries (state, next_at);
"""


class TestPostgresStore(StoreContract):
    """Each test in a schema of its own (`?schema=`); more PostgreSQL tests in test_postgres_store.py."""

    @pytest.fixture
    async def store(self, postgres_schema_url: str) -> AsyncIterator[Store]:
        async with store_from_url(postgres_schema_url) as store:
            yield store

    @pytest.fixture
    async def twin(self, store: Store, postgres_schema_url: str) -> AsyncIterator[Store]:
        """Another replica on the same schema, with a pool of its own."""
        async with store_from_url(postgres_schema_url) as twin:
            yield twin
