"""How the SQL stores lay jobs and deliveries out in rows: indexed columns beside a JSON document."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from receiver.models import FINAL_STATES, Job, JobState, epoch
from receiver.stores.base import Delivery, DeliveryState, StoreFigures

# States a job never leaves, where jobs pile up: the stores count them from a table of counters (kept
# by triggers), not one row per job. The other states hold only the jobs in progress (and `stored`
# ones whose delivery is dead), counted with the (state, model) index.
SETTLED_STATES = frozenset({JobState.PUBLISHED, JobState.FAILED, JobState.MODERATED, JobState.EXPIRED})


def sql_list(states: Collection[JobState]) -> str:
    """States as an SQL list of literals: `('a', 'b')` (enum values, never input)."""
    return "(" + ", ".join(f"'{state.value}'" for state in sorted(states)) + ")"


# The live-state condition written out: it matches the partial index `jobs_live`, and keeps even a
# generic plan (one made blind to the parameters) on that small index.
LIVE = sql_list(set(JobState) - SETTLED_STATES)
COUNT_LIVE = f"SELECT count(*) FROM jobs WHERE state IN {LIVE} AND"  # noqa: S608 - constants only
COUNT_SETTLED = "SELECT coalesce(sum(n), 0) FROM settled_counts WHERE"


def count_queries(states: Collection[JobState]) -> list[tuple[str, list[str]]]:
    """How to count the jobs in `states`: (a SELECT to finish with conditions on state and model, the
    states it counts), one for the live states and one for the settled states."""
    wanted = {JobState(state) for state in states}
    queries = [(COUNT_LIVE, wanted - SETTLED_STATES), (COUNT_SETTLED, wanted & SETTLED_STATES)]
    return [(select, sorted(part)) for select, part in queries if part]


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

# The credits of the jobs submitted in [{since}, {until}): an index search (`jobs_submitted`, on the
# expression {submitted_at}) of that window's jobs, however many the store holds. {cost} and
# {submitted_at} read the document in each database's dialect.
CREDITS_SPENT = (
    "SELECT coalesce(sum({cost}), 0) FROM jobs WHERE {submitted_at} >= {since} AND {submitted_at} < {until}"
)
# What a daily cap counts as spent: that, and the estimates of the submit claims whose lease runs
# ({estimate} reads one), found with the index of upstream slots as in `UPSTREAM_SLOTS`.
CREDITS_COMMITTED = (
    f"SELECT ({CREDITS_SPENT}) + (SELECT coalesce(sum({{estimate}}), 0) FROM jobs"  # noqa: S608 - constants
    " WHERE (state = 'submitted' OR submitting_until IS NOT NULL)"
    " AND state = 'created' AND submitting_until > {now})"
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


# Per state; the settled ones from their counters, so `/metrics` reads no row per finished job.
JOBS_BY_STATE = (
    f"SELECT state, count(*) FROM jobs WHERE state IN {LIVE} GROUP BY state"  # noqa: S608 - constants only
    " UNION ALL SELECT state, sum(n) FROM settled_counts GROUP BY state"
)
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
