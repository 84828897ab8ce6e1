"""How the SQL stores lay jobs and deliveries out in rows: indexed columns beside a JSON document."""

from __future__ import annotations

import json
from typing import Any

from receiver.models import FINAL_STATES, Job
from receiver.stores.base import Delivery, DeliveryState

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
