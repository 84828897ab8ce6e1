"""An in-memory store: the reference implementation of the contract, for tests and throwaway runs."""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio

from receiver.models import FINAL_STATES, Event, Job, JobState, Transition, epoch
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
from receiver.stores.feed import DELIVERY_STATE, JOB_STATE, FeedEntry, Signal

if TYPE_CHECKING:
    from receiver.credits import CreditBudget


class MemoryStore(ResourceBase):
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._keys: dict[str, str] = {}
        self._events: dict[str, Event] = {}
        self._deliveries: dict[tuple[str, str], Delivery] = {}
        self._feed: list[FeedEntry] = []  # in seq order
        self._seq = 0
        self._signal = Signal()

    async def insert(self, job: Job) -> Job:
        if job.idempotency_key is not None and job.idempotency_key in self._keys:
            return self._jobs[self._keys[job.idempotency_key]]
        if job.id in self._jobs:
            raise ValueError(f"job {job.id} exists")
        self._jobs[job.id] = job
        if job.idempotency_key is not None:
            self._keys[job.idempotency_key] = job.id
        self._note(JOB_STATE, job.id, state=job.state.value)
        return job

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def keyed(self, idempotency_key: str) -> Job | None:
        job_id = self._keys.get(idempotency_key)
        return self._jobs[job_id] if job_id is not None else None

    async def legacy_input(self, job_id: str) -> str | None:
        return None  # nothing in memory outlives the process

    async def save(
        self, job: Job, *, event: Event | None = None, sinks: Sequence[str] = (), drop_input: bool = False
    ) -> Job | None:
        current = self._jobs.get(job.id)
        if current is None or current.version != job.version:
            return None
        if event is not None and event.id in self._events:
            return None
        saved = dataclasses.replace(job, version=job.version + 1)
        self._jobs[job.id] = saved
        if saved.state != current.state:
            self._note(JOB_STATE, job.id, state=saved.state.value)
        if event is not None:
            self._events[event.id] = event
            self._note(event.type, event.id, event=event.to_dict())
            for sink in sinks:
                self._deliveries[event.id, sink] = Delivery(event.id, sink)
        return saved

    async def update(
        self,
        job_id: str,
        change: Callable[[Job], Transition | None],
        sinks: Sequence[str] = (),
        *,
        claimed_until: float | None = None,
    ) -> tuple[Job | None, bool]:
        job = self._jobs.get(job_id)
        if job is None:
            return None, False
        transition = change(job)
        if transition is None:
            return job, False
        saved = await self.save(
            transition.job, event=transition.event, sinks=sinks, drop_input=transition.drop_input
        )
        if saved is None:
            return job, False
        if transition.event is not None and claimed_until is not None:
            for sink in sinks:
                self._deliveries[transition.event.id, sink] = Delivery(
                    transition.event.id, sink, attempts=1, next_at=claimed_until
                )
        return saved, True

    async def claim(
        self,
        states: Collection[JobState],
        now: float,
        lease_s: float,
        limit: int,
        model: str | None = None,
    ) -> list[Job]:
        return self._bump([job.claimed(now, lease_s) for job in self._due(states, now, model)[:limit]])

    async def claim_submits(
        self, now: float, lease_s: float, limits: UpstreamLimits, budget: CreditBudget | None = None
    ) -> list[Job]:
        holding = [job for job in self._jobs.values() if job.holds_upstream_slot(now)]
        active = Counter(job.request.model for job in holding)
        spent = 0.0
        if budget is not None:
            claiming = sum(job.credit_estimate or 0.0 for job in holding if job.state is JobState.CREATED)
            spent = await self.credits_spent(budget.start, budget.end) + claiming
        due = lambda model, wanted: self._due({JobState.CREATED}, now, model)[:wanted]  # noqa: E731
        return limits.fill(active, claims_within(budget, spent, now, lease_s, due, self._bump))

    def _due(self, states: Collection[JobState], now: float, model: str | None) -> list[Job]:
        due = [
            job
            for job in self._jobs.values()
            if job.state in states
            and job.due_at is not None
            and job.due_at <= now
            and (model is None or job.request.model == model)
        ]
        return sorted(due, key=lambda job: (job.due_at or 0.0, job.created_at))

    def _bump(self, jobs: list[Job]) -> list[Job]:
        """Store `jobs`, each as a new version of the one stored."""
        saved = [dataclasses.replace(job, version=job.version + 1) for job in jobs]
        self._jobs.update((job.id, job) for job in saved)
        return saved

    async def count(self, states: Collection[JobState], model: str | None = None) -> int:
        return sum(
            1
            for job in self._jobs.values()
            if job.state in states and (model is None or job.request.model == model)
        )

    async def credits_spent(self, since: float, until: float) -> float:
        return sum(
            job.cost.credits
            for job in self._jobs.values()
            if job.cost is not None and job.submitted_at is not None and since <= job.submitted_at < until
        )

    async def list_jobs(
        self, *, state: JobState | None = None, dead_letter: bool = False, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        dead = {d.event_id for d in self._deliveries.values() if d.state is DeliveryState.DEAD}
        jobs = [
            job
            for job in self._jobs.values()
            if (state is None or job.state == state) and (not dead_letter or job.id in dead)
        ]
        jobs.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        return jobs[offset : offset + limit]

    async def event(self, event_id: str) -> Event | None:
        return self._events.get(event_id)

    async def deliveries(self, event_id: str) -> list[Delivery]:
        return sorted((d for d in self._deliveries.values() if d.event_id == event_id), key=lambda d: d.sink)

    async def deliveries_of(self, event_ids: Collection[str]) -> dict[str, list[Delivery]]:
        found: dict[str, list[Delivery]] = {event_id: [] for event_id in event_ids}
        for delivery in sorted(self._deliveries.values(), key=lambda d: d.sink):
            if delivery.event_id in found:
                found[delivery.event_id].append(delivery)
        return found

    async def claim_deliveries(
        self, now: float, lease_s: float, limit: int, sinks: Collection[str]
    ) -> list[Delivery]:
        due = [
            d
            for d in self._deliveries.values()
            if d.state is DeliveryState.PENDING and d.next_at <= now and d.sink in sinks
        ]
        due.sort(key=lambda d: (d.next_at, d.event_id, d.sink))
        claimed = [delivery.claimed(now, lease_s) for delivery in due[:limit]]
        self._deliveries.update(((d.event_id, d.sink), d) for d in claimed)
        return claimed

    async def save_delivery(self, delivery: Delivery, *, expected_attempts: int) -> bool:
        key = (delivery.event_id, delivery.sink)
        current = self._deliveries.get(key)
        if current is None or current.attempts != expected_attempts:
            return False
        self._put_delivery(delivery)
        return True

    async def complete_delivery(
        self, delivery: Delivery, *, expected_attempts: int, then: Callable[[Job], Transition | None]
    ) -> bool:
        if not await self.save_delivery(delivery, expected_attempts=expected_attempts):
            return False
        if all(d.state is DeliveryState.DELIVERED for d in await self.deliveries(delivery.event_id)):
            await self.update(delivery.event_id, then)
        return True

    async def redeliver(self, event_id: str, sinks: Sequence[str], now: float) -> int:
        if event_id not in self._events:
            return 0
        for sink in sinks:
            self._put_delivery(Delivery(event_id, sink, next_at=now))
        return len(sinks)

    async def feed(
        self, after: int, *, job_id: str | None = None, types: Collection[str] = (), limit: int = 100
    ) -> list[FeedEntry]:
        start = bisect.bisect_right(self._feed, after, key=lambda e: e.seq)
        entries = (
            e
            for e in self._feed[start:]
            if (job_id is None or e.job_id == job_id) and (not types or e.type in types)
        )
        return [e for _, e in zip(range(limit), entries, strict=False)]

    async def feed_head(self) -> int:
        return self._seq

    def feed_changed(self) -> anyio.Event:
        return self._signal.changed()

    async def overview(self, now: float) -> Overview:
        per_state = {state.value: 0 for state in JobState}
        for job in self._jobs.values():
            per_state[job.state.value] += 1
        oldest: dict[str, float] = {}
        for d in self._deliveries.values():
            if d.state is not DeliveryState.DELIVERED:
                made = self._jobs[d.event_id].finished_at or 0.0
                oldest[d.sink] = min(oldest.get(d.sink, made), made)
        dead = {d.event_id for d in self._deliveries.values() if d.state is DeliveryState.DEAD}
        return Overview(
            jobs_per_state=per_state,
            events_last_minute=sum(1 for e in self._feed if e.event is not None and e.at >= now - 60),
            dead_letters=len(dead),
            oldest_undelivered=oldest,
        )

    def _put_delivery(self, delivery: Delivery) -> None:
        current = self._deliveries.get((delivery.event_id, delivery.sink))
        self._deliveries[delivery.event_id, delivery.sink] = delivery
        if current is not None and current.state != delivery.state:
            self._note(DELIVERY_STATE, delivery.event_id, state=delivery.state.value, sink=delivery.sink)

    def _note(self, kind: str, job_id: str, **fields: Any) -> None:
        self._seq += 1
        self._feed.append(FeedEntry(self._seq, time.time(), kind, job_id, **fields))
        self._signal.notify()

    def watch(self, on_change: Callable[[Change], None]) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def figures(self) -> StoreFigures | None:
        pending = [d for d in self._deliveries.values() if d.state is DeliveryState.PENDING]
        outbox: dict[str, tuple[int, float]] = {}
        for delivery in pending:
            count, oldest = outbox.get(delivery.sink, (0, float("inf")))
            outbox[delivery.sink] = (count + 1, min(oldest, epoch(self._events[delivery.event_id].time)))
        return StoreFigures(Counter(job.state for job in self._jobs.values()), outbox)

    async def expired_jobs(self, before: float, limit: int) -> list[Job]:
        pending = {d.event_id for d in self._deliveries.values() if d.state is DeliveryState.PENDING}
        done = [
            job
            for job in self._jobs.values()
            if job.created_at < before and job.state in FINAL_STATES and job.id not in pending
        ]
        return sorted(done, key=lambda job: (job.created_at, job.id))[:limit]

    async def delete_jobs(self, job_ids: Collection[str]) -> int:
        deleted = [self._jobs.pop(job_id) for job_id in job_ids if job_id in self._jobs]
        for job in deleted:
            self._events.pop(job.id, None)
            if job.idempotency_key is not None:
                self._keys.pop(job.idempotency_key, None)
        gone = {job.id for job in deleted}
        self._deliveries = {key: d for key, d in self._deliveries.items() if d.event_id not in gone}
        self._feed = [e for e in self._feed if e.job_id not in gone]
        return len(deleted)
