"""Group commit for PostgreSQL: job updates that arrive together share one transaction.

While a batch is being committed, new updates queue; the next batch takes them all (urgent ones first,
those someone waits on). A batch reads its jobs with one `SELECT ... FOR UPDATE`, applies each update's
lifecycle step in order (several steps of one job see each other's result), and writes every changed
job, event, delivery and dropped input with one statement; nobody is answered before the commit.
If that statement fails (an event another writer already stored), each update of the batch is run
again on its own, so one update's conflict never fails the others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from receiver.models import Job, Transition
from receiver.stores.rows import job_columns, job_doc, job_from_doc, new_delivery

MAX_BATCH = 64

Outcome = tuple[Job | None, bool]

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


@dataclass(frozen=True)
class Update:
    job_id: str
    change: Callable[[Job], Transition | None]
    sinks: Sequence[str]
    claimed_until: float | None
    done: asyncio.Future[Outcome]


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


class UpdateBatcher:
    def __init__(self, acquire: Callable[[], Any], alone: Callable[[Update], Awaitable[Outcome]]):
        self._acquire = acquire  # a pooled connection, as `async with acquire() as conn`
        self._alone = alone  # runs one update in a transaction of its own
        self._urgent: list[Update] = []
        self._background: list[Update] = []
        self._draining: asyncio.Task[None] | None = None
        self.committed = 0  # batches committed: for tests and metrics

    async def update(
        self,
        job_id: str,
        change: Callable[[Job], Transition | None],
        sinks: Sequence[str],
        claimed_until: float | None,
        *,
        urgent: bool,
    ) -> Outcome:
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._background).append(
            Update(job_id, change, tuple(sinks), claimed_until, done)
        )
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await done  # a caller that goes away leaves its update queued: committed all the same

    async def aclose(self) -> None:
        """Wait for every update queued to be committed."""
        if self._draining is not None:
            await self._draining

    async def _drain(self) -> None:
        try:
            while self._urgent or self._background:
                batch = self._take()
                try:
                    outcomes = await self._commit(batch)
                except (asyncpg.IntegrityConstraintViolationError, asyncpg.DeadlockDetectedError):
                    outcomes = None
                except Exception as exc:  # the connection or the transaction failed: so did every update
                    _settle(batch, exc)
                    continue
                if outcomes is None:
                    await self._one_by_one(batch)
                else:
                    self.committed += 1
                    _settle(batch, outcomes)
        finally:
            self._draining = None

    def _take(self) -> list[Update]:
        batch = self._urgent[:MAX_BATCH]
        del self._urgent[: len(batch)]
        more = self._background[: MAX_BATCH - len(batch)]
        del self._background[: len(more)]
        return batch + more

    async def _one_by_one(self, batch: list[Update]) -> None:
        for update in batch:
            try:
                outcome = await self._alone(update)
            except Exception as exc:
                _settle([update], exc)
            else:
                _settle([update], [outcome])

    async def _commit(self, batch: list[Update]) -> list[Outcome | BaseException]:
        async with self._acquire() as conn, conn.transaction():
            ids = sorted({update.job_id for update in batch})  # one lock order: batches never deadlock
            locked = {row["id"]: job_from_doc(row["doc"]) for row in await conn.fetch(LOCK_JOBS, ids)}
            writes = _Writes(read_versions={job_id: job.version for job_id, job in locked.items()})
            outcomes = [_step(update, locked, writes) for update in batch]
            if writes.jobs:
                changed = await conn.fetchval(WRITE_BATCH, *writes.args())
                if changed != len(writes.jobs):  # cannot happen while we hold the row locks
                    raise RuntimeError(f"batch wrote {changed} of {len(writes.jobs)} jobs")
        return outcomes


def _step(update: Update, current: dict[str, Job], writes: _Writes) -> Outcome | BaseException:
    job = current.get(update.job_id)
    if job is None:
        return None, False
    try:
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


def _settle(batch: list[Update], outcomes: Sequence[Outcome | BaseException] | BaseException) -> None:
    results = [outcomes] * len(batch) if isinstance(outcomes, BaseException) else outcomes
    for update, result in zip(batch, results, strict=True):
        if update.done.done():
            continue
        if isinstance(result, BaseException):
            update.done.set_exception(result)
        else:
            update.done.set_result(result)
