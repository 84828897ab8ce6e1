"""How the SQL stores lay jobs and deliveries out in rows: indexed columns beside a JSON document."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from receiver.models import FINAL_STATES, Job, JobState
from receiver.stores.base import Delivery, DeliveryState

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
# `{where}` is the store's own condition on state and model, `{limit}` its placeholder for the most
# worth counting (the submitter needs to know up to the active-task limit, however many there are).
COUNT_LIVE = (
    "SELECT count(*) FROM"  # noqa: S608 - constants only
    f" (SELECT 1 FROM jobs WHERE state IN {LIVE} AND {{where}} LIMIT {{limit}}) AS live"
)
COUNT_SETTLED = "SELECT coalesce(sum(n), 0) FROM settled_counts WHERE {where}"


def count_queries(states: Collection[JobState]) -> list[tuple[str, list[str], bool]]:
    """How to count the jobs in `states`: (a SELECT to fill in, the states it counts, whether it takes
    a limit), one for the live states and one for the settled states."""
    wanted = {JobState(state) for state in states}
    queries = [(COUNT_LIVE, wanted - SETTLED_STATES, True), (COUNT_SETTLED, wanted & SETTLED_STATES, False)]
    return [(select, sorted(part), bounded) for select, part, bounded in queries if part]


DELIVERY_COLUMNS = "event_id, sink, state, attempts, next_at, last_error, delivered_at"
FINAL_STATE_NAMES = sorted(state.value for state in FINAL_STATES)
# What a job leaves behind in each table, by the column naming it: deleted with the job.
JOB_TABLES = (("deliveries", "event_id"), ("events", "id"), ("job_inputs", "job_id"), ("jobs", "id"))
SELECT_DELIVERIES = f"SELECT {DELIVERY_COLUMNS} FROM deliveries"  # noqa: S608 - constants only


def job_columns(job: Job) -> tuple[str, str, int, str | None, float | None]:
    """state, model, version, idempotency_key, due_at: what the queries filter and order on."""
    return job.state.value, job.request.model.value, job.version, job.idempotency_key, job.due_at


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
