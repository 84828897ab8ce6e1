"""Jobs written straight into the receiver's store, as if the receiver had submitted them to BFL.

Each job is made with the receiver's own `lifecycle.new_job` and saved `submitted`, with a BFL task
id and a due time an hour away, so the reconciler leaves it alone until its webhook arrives. Each
webhook's secret is what the receiver derives for that job from the signing key it is given.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
import uuid
from dataclasses import dataclass

import asyncpg

from receiver import lifecycle
from receiver.models import EditRequest, Job, JobState
from receiver.stores import store_from_url
from receiver.stores.rows import job_columns, job_doc
from receiver.webhook_auth import WebhookSigner

SIGNING_KEY = "bench-signing-key"


@dataclass(frozen=True)
class SeededJob:
    job_id: str
    task_id: str
    secret: str


def make_jobs(count: int, signing_key: str = SIGNING_KEY) -> list[SeededJob]:
    signer = WebhookSigner([signing_key])
    jobs = []
    for _ in range(count):
        job_id = str(uuid.uuid4())
        jobs.append(SeededJob(job_id, str(uuid.uuid4()), signer.secret_for(job_id)))
    return jobs


async def insert_jobs(store_url: str, jobs: list[SeededJob]) -> None:
    """Open the store at `store_url` (creating its tables) and add every job as `submitted`: rows as the
    store writes them (its own columns and document), written in bulk, so seeding 100,000 jobs takes a
    second rather than a minute of single inserts."""
    async with store_from_url(store_url):
        pass
    now = time.time()
    request = EditRequest(prompt="bench", metadata={"bench": True})
    rows = [_row(job, request, now) for job in jobs]
    if store_url.startswith("sqlite://"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None, timeout=60)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT_JOB, rows)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    dsn, _, schema = store_url.partition("?schema=")
    pg = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'} if schema else None)
    try:
        await pg.copy_records_to_table("jobs", records=rows, columns=COLUMNS.split(", "))
    finally:
        await pg.close()


# The columns of `job_row`'s values, in order.
COLUMNS = "id, state, model, version, idempotency_key, due_at, submitting_until, created_at, doc"
INSERT_JOB = f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * 9)})"


def job_row(job: Job) -> tuple[object, ...]:
    """`job` as the stores write its row."""
    return (job.id, *job_columns(job), job.created_at, job_doc(job))


def _row(seeded: SeededJob, request: EditRequest, now: float) -> tuple[object, ...]:
    job = lifecycle.new_job(seeded.job_id, request, now)
    job = dataclasses.replace(
        job, state=JobState.SUBMITTED, bfl_task_id=seeded.task_id, submitted_at=now, due_at=now + 3600
    )
    return job_row(job)
