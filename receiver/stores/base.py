"""The job store interface: jobs with compare-and-set writes, plus an outbox of events per sink."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import anyio

from receiver import credits
from receiver.models import Event, Job, JobState, Transition
from receiver.resource import Resource
from receiver.stores.feed import FeedEntry

if TYPE_CHECKING:
    from receiver.credits import CreditBudget


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class Delivery:
    """One event's delivery to one sink."""

    event_id: str
    sink: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_at: float = 0.0
    last_error: str | None = None
    delivered_at: float | None = None

    def claimed(self, now: float, lease_s: float) -> Delivery:
        return dataclasses.replace(self, attempts=self.attempts + 1, next_at=now + lease_s)


@dataclass(frozen=True)
class Overview:
    """What the dashboard's overview strip shows."""

    jobs_per_state: dict[str, int]
    events_last_minute: int  # completion events committed in the minute before `now`
    dead_letters: int  # jobs with a dead-lettered delivery
    oldest_undelivered: dict[str, float]  # sink -> when the oldest event not yet delivered there was made


@dataclass(frozen=True)
class UpstreamLimits:
    """How many tasks the BFL account may have active at once: in all, and per model."""

    total: int
    models: tuple[str, ...]  # every model a job may name (the catalog's)
    per_model: Mapping[str, int] = field(default_factory=dict)

    def room(self, active: Mapping[str, int]) -> tuple[int, list[tuple[str, int]]]:
        """The free slots in all, and how many more of each model may start, given what is active.
        Models with a limit of their own come first, so jobs waiting for their smaller quota never
        block the rest."""
        free = self.total - sum(active.values())
        models = sorted(self.models, key=lambda model: model not in self.per_model)
        return free, [(model, self._room_for(model, free, active)) for model in models]

    def fill(self, active: Mapping[str, int], claim: Callable[[str, int], list[Job]]) -> list[Job]:
        """Claim, with `claim(model, at_most)`, as many jobs as the free slots allow, model by model."""
        free, room = self.room(active)
        claimed: list[Job] = []
        for model, slots in room:
            if (wanted := min(slots, free - len(claimed))) > 0:
                claimed += claim(model, wanted)
        return claimed

    def _room_for(self, model: str, free: int, active: Mapping[str, int]) -> int:
        if model not in self.per_model:
            return free
        return min(free, self.per_model[model] - active.get(model, 0))


def claims_within(
    budget: CreditBudget | None,
    spent: float,
    now: float,
    lease_s: float,
    due: Callable[[str, int], list[Job]],
    write: Callable[[list[Job]], list[Job]],
) -> Callable[[str, int], list[Job]]:
    """A `claim(model, at_most)` for `UpstreamLimits.fill` that keeps to a credit budget (if any), today's
    spend being `spent`: of the jobs `due(model, at_most)` finds, those that fit are claimed for submit,
    the others held until the next day (and no longer due, so the next look finds the jobs after them);
    `write` stores both and returns them as stored."""

    def claim(model: str, at_most: int) -> list[Job]:
        nonlocal spent
        claimed: list[Job] = []
        while len(claimed) < at_most:
            allotment = credits.allot(budget, spent, due(model, at_most - len(claimed)), now, lease_s)
            spent = allotment.spent
            claimed += write(allotment.claimed + allotment.held)[: len(allotment.claimed)]
            if not allotment.held:
                break
        return claimed

    return claim


@dataclass(frozen=True)
class StoreFigures:
    """What the store holds, for the metrics: jobs per state, and per sink the events not yet delivered
    with the time (epoch seconds) of the oldest."""

    jobs: Mapping[JobState, int]
    outbox: Mapping[str, tuple[int, float]]


class Change(StrEnum):
    """A change committed to the store that may make background work due."""

    JOB_CREATED = "job_created"
    SLOT_FREED = "slot_freed"  # a task left `submitted`: BFL has one active task fewer
    RESULT_READY = "result_ready"  # a job is `received`: its image is to be fetched
    DELIVERY_DUE = "delivery_due"  # an event is to be delivered (new, or redelivered)


class Store(Resource, Protocol):
    async def insert(self, job: Job) -> Job:
        """Add a new job; with an idempotency key already taken, return that key's job instead."""

    async def get(self, job_id: str) -> Job | None: ...

    async def keyed(self, idempotency_key: str) -> Job | None:
        """The job created with this idempotency key, if any."""

    async def legacy_input(self, job_id: str) -> str | None:
        """The base64 input image of a job accepted before input images went to the blob store (the
        `job_inputs` table held it until submit; `drop_input` deletes it). None for every newer job."""

    async def save(
        self, job: Job, *, event: Event | None = None, sinks: Sequence[str] = (), drop_input: bool = False
    ) -> Job | None:
        """Write `job` if the stored version is still `job.version`; return it with the version bumped,
        or None when another writer got there first. With `event`, the event and a pending delivery per
        sink are written in the same transaction; if that event exists already (the job was finished by
        another writer), nothing is written and the answer is None."""

    async def update(
        self,
        job_id: str,
        change: Callable[[Job], Transition | None],
        sinks: Sequence[str] = (),
        *,
        claimed_until: float | None = None,
    ) -> tuple[Job | None, bool]:
        """Apply `change` (a pure lifecycle step) to the job and write what it returns, atomically: the
        job read, the step and the write happen in one transaction, so concurrent updates of a job are
        serialized and a webhook and a poll racing for it produce exactly one outcome. An event the step
        returns is written with a pending delivery per sink, or, with `claimed_until`, with deliveries
        already claimed by the caller (one attempt, due again then), who delivers them at once.
        Returns (job as stored, whether it changed); (None, False) for an unknown job."""

    async def claim(
        self,
        states: Collection[JobState],
        now: float,
        lease_s: float,
        limit: int,
        model: str | None = None,
    ) -> list[Job]:
        """Take up to `limit` due jobs in `states` (and of `model`), earliest first, each saved as
        `job.claimed(now, lease_s)`. A job another worker holds is not due, so it is never taken twice."""

    async def claim_submits(
        self, now: float, lease_s: float, limits: UpstreamLimits, budget: CreditBudget | None = None
    ) -> list[Job]:
        """Take due created jobs to submit (each `job.claimed_for_submit(now, lease_s)`), as many as
        `limits` leave room for. What is active is counted in the same transaction, over every process
        sharing the store: jobs BFL has and jobs claimed for a submit (`Job.holds_upstream_slot`).
        With a `budget`, so is the day's spend: the costs of the jobs submitted that day and the
        estimates of the submit claims whose lease runs; a job that does not fit is not claimed but held
        until the next day (`CreditBudget.allot`), in the same transaction."""

    async def count(self, states: Collection[JobState], model: str | None = None) -> int: ...

    async def credits_spent(self, since: float, until: float) -> float:
        """The credits of every job submitted in [since, until) (its `cost`, as BFL last said)."""

    async def list_jobs(
        self, *, state: JobState | None = None, dead_letter: bool = False, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        """Newest first; `dead_letter` keeps jobs with a dead delivery."""

    async def event(self, event_id: str) -> Event | None: ...

    async def deliveries(self, event_id: str) -> list[Delivery]: ...

    async def deliveries_of(self, event_ids: Collection[str]) -> dict[str, list[Delivery]]:
        """The deliveries of every given event in one read: by event id, each list as `deliveries`
        gives it (by sink), an empty one for an event with none."""

    async def claim_deliveries(
        self, now: float, lease_s: float, limit: int, sinks: Collection[str]
    ) -> list[Delivery]:
        """Take up to `limit` due pending deliveries to `sinks`, earliest first, each saved as claimed.
        Deliveries to other sinks wait for a process that has them (a rolling change of RECEIVER_SINKS)."""

    async def save_delivery(self, delivery: Delivery, *, expected_attempts: int) -> bool:
        """Write `delivery` if its stored attempt count is still `expected_attempts`."""

    async def complete_delivery(
        self, delivery: Delivery, *, expected_attempts: int, then: Callable[[Job], Transition | None]
    ) -> bool:
        """Write a delivered `delivery` as `save_delivery` does and, in the same transaction, when it was
        the event's last undelivered one, apply `then` to the event's job (an event has its job's id)."""

    async def redeliver(self, event_id: str, sinks: Sequence[str], now: float) -> int:
        """Make the event due again for every sink; return how many deliveries were reset."""

    async def feed(
        self, after: int, *, job_id: str | None = None, types: Collection[str] = (), limit: int = 100
    ) -> list[FeedEntry]:
        """Feed entries numbered above `after`, in order: an entry committed later is never numbered
        below one already read, so a reader that resumes after the last number it saw misses nothing."""

    async def feed_head(self) -> int:
        """The number of the newest feed entry (0 for none): where a reader of only what is new starts."""

    def feed_changed(self) -> anyio.Event:
        """Set when the feed next grows (by any process on a shared store); take it before `feed`."""

    async def overview(self, now: float) -> Overview: ...
    def watch(self, on_change: Callable[[Change], None]) -> AbstractAsyncContextManager[None]:
        """While open, call `on_change` for the changes processes sharing the store commit (this one's
        included), so their background work starts at once instead of at its next look at the store.
        A store only one process can use does nothing: that process wakes its own loops."""

    async def figures(self) -> StoreFigures | None:
        """The store's figures, or None when another process sharing the store reports them: summed over
        every process, each job and event then counts once."""

    async def expired_jobs(self, before: float, limit: int) -> list[Job]:
        """Up to `limit` jobs created before `before` that are done with: in a final state, and with no
        delivery still pending (delivered or dead-lettered). Oldest first."""

    async def delete_jobs(self, job_ids: Collection[str]) -> int:
        """Delete these jobs with their events, deliveries and any legacy input; return how many."""
