"""How the SQL stores lay jobs and deliveries out in rows: indexed columns beside a JSON document."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from receiver.models import FINAL_STATES, Job, JobState, epoch
from receiver.stores.base import Delivery, DeliveryState, StoreFigures

DELIVERY_COLUMNS = "event_id, sink, state, attempts, next_at, last_error, delivered_at"
FINAL_STATE_NAMES = sorted(state.value for state in FINAL_STATES)
# What a job leaves behind in each table, by the column naming it: deleted with the job.
JOB_TABLES = (
    ("deliveries", "event_id"),
    ("events", "id"),
    ("job_inputs", "job_id"),
    ("feed", "job_id"),
    ("jobs", "id"),  # last: its count is the answer
)
SELECT_DELIVERIES = f"SELECT {DELIVERY_COLUMNS} FROM deliveries"  # noqa: S608 - constants only


# Tasks active upstream per model: jobs BFL has, and jobs claimed for a submit whose lease runs ({now}
# is the current time's parameter). The first condition is the partial index's, which keeps this to
# the few rows that may hold a slot.
UPSTREAM_SLOTS = (
    "SELECT model, count(*) FROM jobs WHERE (state = 'submitted' OR submitting_until IS NOT NULL)"
    " AND (state = 'submitted' OR submitting_until > {now}) GROUP BY model"
)


def job_columns(job: Job) -> tuple[str, str, int, str | None, float | None, float | None]:
    """state, model, version, idempotency_key, due_at, submitting_until: what the queries filter and
    order on. `submitting_until` only counts while the job is created, so it is NULL in every other
    state, and the index of upstream slots stays small."""
    submitting_until = job.submitting_until if job.state is JobState.CREATED else None
    return (
        job.state.value,
        job.request.model,
        job.version,
        job.idempotency_key,
        job.due_at,
        submitting_until,
    )


JOBS_BY_STATE = "SELECT state, count(*) FROM jobs GROUP BY state"
# Per sink: undelivered events and the time of the oldest ({time} reads `time` from an event's JSON).
OUTBOX_BY_SINK = (
    "SELECT d.sink, count(*), min({time}) FROM deliveries d JOIN events e ON e.id = d.event_id"
    " WHERE d.state = 'pending' GROUP BY d.sink"
)


def figures_from_rows(jobs: Iterable[Any], outbox: Iterable[Any]) -> StoreFigures:
    return StoreFigures(
        jobs={JobState(state): int(count) for state, count in jobs},
        outbox={sink: (int(count), epoch(oldest)) for sink, count, oldest in outbox},
    )


def active_upstream(rows: Iterable[Any]) -> Counter[str]:
    """`UPSTREAM_SLOTS` rows as counts per model."""
    return Counter({str(model): int(count) for model, count in rows})


def job_doc(job: Job) -> str:
    return json.dumps(job.to_doc(), separators=(",", ":"))


def job_from_doc(doc: str) -> Job:
    return Job.from_doc(json.loads(doc))


def new_delivery(claimed_until: float | None) -> tuple[int, float]:
    """A new delivery's (attempts, next_at): due now, or already claimed by its writer until a time."""
    return (0, 0.0) if claimed_until is None else (1, claimed_until)


def delivery_from_row(row: Any) -> Delivery:
    event_id, sink, state, attempts, next_at, last_error, delivered_at = row
    return Delivery(event_id, sink, DeliveryState(state), attempts, next_at, last_error, delivered_at)
