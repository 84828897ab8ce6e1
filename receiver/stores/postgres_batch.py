"""Group commit for PostgreSQL: job updates that arrive together share one transaction, and so do
delivery completions.

While a batch is being committed, new items queue; the next batch takes them all (urgent ones first,
those someone waits on); nobody is answered before the commit. If a batch fails on a conflict (an
event another writer already stored, a deadlock), each item of it is run again on its own, so one
item's conflict never fails the others. A batch runs with no job's log context (it is not the job of
whichever caller started it): a line about an item run alone or about a job's step names that job.

A batch of updates reads its jobs with one `SELECT ... FOR UPDATE`, applies each update's lifecycle
step in order (several steps of one job see each other's result), and writes every changed job, event,
delivery and dropped input with one statement. A batch of completions writes its deliveries with one
statement, then locks the jobs of those written, finds in a statement of its own (which sees the
completions other transactions committed while it waited for the locks) the events with a sink still
to go, and applies each other event's step to its job with the updates' one write.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from receiver.logs import about_job
from receiver.models import Job, Transition
from receiver.stores.base import Delivery, DeliveryState
from receiver.stores.rows import job_columns, job_doc, job_from_doc, new_delivery

MAX_BATCH = 64

Outcome = tuple[Job | None, bool]
Item = TypeVar("Item")
Result = TypeVar("Result")

LOCK_JOBS = "SELECT id, doc FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"

# One round trip for everything a batch writes. The CTEs run on one snapshot; none reads another's rows.
WRITE_BATCH = """
WITH changed AS (
    UPDATE jobs SET state = v.state, model = v.model, version = v.version, idempotency_key = v.key,
        due_at = v.due_at, submitting_until = v.submitting_until, doc = v.doc
    FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::int[], $6::text[], $7::float8[],
                $8::float8[], $9::json[])
        AS v(id, old_version, state, model, version, key, due_at, submitting_until, doc)
    WHERE jobs.id = v.id AND jobs.version = v.old_version
    RETURNING jobs.id
), dropped AS (
    DELETE FROM job_inputs WHERE job_id = ANY($10::text[])
), new_events AS (
    INSERT INTO events (id, body) SELECT * FROM unnest($11::text[], $12::json[])
), new_deliveries AS (
    INSERT INTO deliveries (event_id, sink, state, attempts, next_at)
    SELECT d.event_id, d.sink, 'pending', d.attempts, d.next_at
    FROM unnest($13::text[], $14::text[], $15::int[], $16::float8[]) AS d(event_id, sink, attempts, next_at)
)
SELECT count(*) FROM changed
"""

COMPLETE_DELIVERIES = """
UPDATE deliveries SET state = v.state, attempts = v.attempts, next_at = v.next_at,
    last_error = v.last_error, delivered_at = v.delivered_at
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::int[], $6::float8[], $7::text[],
            $8::float8[]) WITH ORDINALITY
    AS v(event_id, sink, expected_attempts, state, attempts, next_at, last_error, delivered_at, n)
WHERE deliveries.event_id = v.event_id AND deliveries.sink = v.sink
    AND deliveries.attempts = v.expected_attempts
RETURNING v.n
"""

UNDELIVERED = "SELECT DISTINCT event_id FROM deliveries WHERE event_id = ANY($1::text[]) AND state <> $2"


class RunAlone(Exception):
    """Raised by a batch's commit (rolling it back) to have each of its items run on its own."""


class GroupCommit(Generic[Item, Result]):
    """Items arriving together committed in one transaction by `commit`, one result per item, or each
    by `alone` when the batch conflicts; `job_of` names an item's job."""

    def __init__(
        self,
        commit: Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]],
        alone: Callable[[Item], Awaitable[Result]],
        job_of: Callable[[Item], str],
    ) -> None:
        self._commit = commit
        self._alone = alone
        self._job_of = job_of
        self._urgent: list[tuple[Item, asyncio.Future[Result]]] = []
        self._background: list[tuple[Item, asyncio.Future[Result]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.committed = 0  # batches committed: for tests and metrics

    async def run(self, item: Item, *, urgent: bool = False) -> Result:
        done: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._background).append((item, done))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await done  # a caller that goes away leaves its item queued: committed all the same

    async def aclose(self) -> None:
        """Wait for every item queued to be committed."""
        if self._draining is not None:
            await self._draining

    async def _drain(self) -> None:
        structlog.contextvars.clear_contextvars()  # in this task's copy of the starting caller's context
        try:
            while self._urgent or self._background:
                batch = self._take()
                try:
                    outcomes = await self._commit([item for item, _ in batch])
                except (asyncpg.IntegrityConstraintViolationError, asyncpg.DeadlockDetectedError, RunAlone):
                    await self._one_by_one(batch)
                except Exception as exc:  # the connection or the transaction failed: so did every item
                    _settle(batch, [exc] * len(batch))
                else:
                    self.committed += 1
                    _settle(batch, outcomes)
        finally:
            self._draining = None

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        batch = self._urgent[:MAX_BATCH]
        del self._urgent[: len(batch)]
        more = self._background[: MAX_BATCH - len(batch)]
        del self._background[: len(more)]
        return batch + more

    async def _one_by_one(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        for queued in batch:
            outcome: Result | BaseException
            try:
                with structlog.contextvars.bound_contextvars(job_id=self._job_of(queued[0])):
                    outcome = await self._alone(queued[0])
            except Exception as exc:
                outcome = exc
            _settle([queued], [outcome])


@dataclass(frozen=True)
class Update:
    job_id: str
    change: Callable[[Job], Transition | None]
    sinks: Sequence[str]
    claimed_until: float | None


@dataclass
class _Writes:
    """What one batch writes: the last version of each changed job, and the rows its steps added."""

    read_versions: dict[str, int] = field(default_factory=dict)  # job id -> version as locked
    jobs: dict[str, Job] = field(default_factory=dict)
    dropped_inputs: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    deliveries: list[tuple[str, str, int, float]] = field(default_factory=list)

    def args(self) -> list[list[Any]]:
        rows = [
            (job.id, self.read_versions[job.id], *job_columns(job), job_doc(job))
            for job in self.jobs.values()
        ]
        job_args = [list(column) for column in zip(*rows, strict=True)] or [[]] * 9
        event_args = [list(column) for column in zip(*self.events, strict=True)] or [[], []]
        delivery_args = [list(column) for column in zip(*self.deliveries, strict=True)] or [[]] * 4
        return [*job_args, self.dropped_inputs, *event_args, *delivery_args]


class UpdateBatcher(GroupCommit[Update, Outcome]):
    def __init__(self, acquire: Callable[[], Any], alone: Callable[[Update], Awaitable[Outcome]]):
        super().__init__(self._commit_updates, alone, lambda update: update.job_id)
        self._acquire = acquire  # a pooled connection, as `async with acquire() as conn`

    async def _commit_updates(self, batch: list[Update]) -> list[Outcome | BaseException]:
        async with self._acquire() as conn, conn.transaction():
            ids = sorted({update.job_id for update in batch})  # one lock order: batches never deadlock
            locked = {row["id"]: job_from_doc(row["doc"]) for row in await conn.fetch(LOCK_JOBS, ids)}
            writes = _Writes(read_versions={job_id: job.version for job_id, job in locked.items()})
            outcomes = [_step(update, locked, writes) for update in batch]
            await _write(conn, writes)
        return outcomes


@dataclass(frozen=True)
class Completion:
    delivery: Delivery  # delivered
    expected_attempts: int
    then: Callable[[Job], Transition | None]  # for the event's job, once no sink is left to deliver to


class CompletionBatcher(GroupCommit[Completion, bool]):
    def __init__(self, acquire: Callable[[], Any], alone: Callable[[Completion], Awaitable[bool]]):
        super().__init__(self._commit_completions, alone, lambda completion: completion.delivery.event_id)
        self._acquire = acquire

    async def _commit_completions(self, batch: list[Completion]) -> list[bool]:
        # In one order (that of `redeliver` too), so that batches writing rows of one event never deadlock.
        order = sorted(range(len(batch)), key=lambda n: _key(batch[n]))
        rows = [_completion_row(batch[n]) for n in order]
        async with self._acquire() as conn, conn.transaction():
            found = await conn.fetch(
                COMPLETE_DELIVERIES, *[list(column) for column in zip(*rows, strict=True)]
            )
            written = {order[row["n"] - 1] for row in found}  # positions in `batch`
            if written:
                await _apply_steps(conn, [batch[n] for n in sorted(written)])
        return [n in written for n in range(len(batch))]


def _key(completion: Completion) -> tuple[str, str]:
    return completion.delivery.event_id, completion.delivery.sink


def _completion_row(completion: Completion) -> tuple[Any, ...]:
    d = completion.delivery
    return (
        *_key(completion),
        completion.expected_attempts,
        d.state.value,
        d.attempts,
        d.next_at,
        d.last_error,
        d.delivered_at,
    )


async def _apply_steps(conn: asyncpg.Connection, written: list[Completion]) -> None:
    """Apply the step of the first of `written` for each event to its job, when the event has no
    delivery left to do."""
    # The job's row lock serializes the sinks of one event finishing at the same time: the look for
    # deliveries left, a statement of its own, sees what the transactions it waited for committed.
    ids = sorted({completion.delivery.event_id for completion in written})  # the jobs' one lock order
    locked = {row["id"]: job_from_doc(row["doc"]) for row in await conn.fetch(LOCK_JOBS, ids)}
    for row in await conn.fetch(UNDELIVERED, list(locked), DeliveryState.DELIVERED.value):
        del locked[row["event_id"]]
    writes = _Writes(read_versions={job_id: job.version for job_id, job in locked.items()})
    stepped: set[str] = set()
    for completion in written:
        job_id = completion.delivery.event_id
        if job_id in locked and job_id not in stepped:
            stepped.add(job_id)
            if isinstance(_step(Update(job_id, completion.then, (), None), locked, writes), BaseException):
                raise RunAlone  # that step fails alone, as `alone` runs it
    await _write(conn, writes)


async def _write(conn: asyncpg.Connection, writes: _Writes) -> None:
    if writes.jobs:
        changed = await conn.fetchval(WRITE_BATCH, *writes.args())
        if changed != len(writes.jobs):  # cannot happen while we hold the row locks
            raise RuntimeError(f"batch wrote {changed} of {len(writes.jobs)} jobs")


def _step(update: Update, current: dict[str, Job], writes: _Writes) -> Outcome | BaseException:
    job = current.get(update.job_id)
    if job is None:
        return None, False
    try:
        with about_job(job.id, job.bfl_task_id):
            transition = update.change(job)
    except Exception as exc:  # this update fails alone
        return exc
    if transition is None or transition.job.version != job.version:
        return job, False
    saved = dataclasses.replace(transition.job, version=job.version + 1)
    current[job.id] = writes.jobs[job.id] = saved
    if transition.drop_input:
        writes.dropped_inputs.append(job.id)
    event = transition.event
    if event is not None:
        writes.events.append((event.id, json.dumps(event.to_dict())))
        attempts, next_at = new_delivery(update.claimed_until)
        writes.deliveries += [(event.id, sink, attempts, next_at) for sink in update.sinks]
    return saved, True


def _settle(
    batch: Sequence[tuple[Any, asyncio.Future[Result]]], outcomes: Sequence[Result | BaseException]
) -> None:
    for (_, done), result in zip(batch, outcomes, strict=True):
        if done.done():
            continue
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)
