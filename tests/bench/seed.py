"""Jobs written straight into the receiver's store, as if the receiver had submitted them to BFL.

Each job is made with the receiver's own `lifecycle.new_job` and saved `submitted`, with a BFL task
id and a due time an hour away, so the reconciler leaves it alone until its webhook arrives. Each
webhook's secret is what the receiver derives for that job from the signing key it is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from dataclasses import dataclass

from receiver import lifecycle
from receiver.models import EditRequest, JobState
from receiver.stores import Store, store_from_url
from receiver.webhook_auth import WebhookSigner

SIGNING_KEY = "bench-signing-key"
BATCH = 64  # inserts in flight at once (PostgreSQL uses a pool; SQLite serialises them anyway)


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
    """Open the store at `store_url` (creating its schema) and add every job as `submitted`."""
    store: Store = store_from_url(store_url)
    async with store:
        now = time.time()
        request = EditRequest(prompt="bench", metadata={"bench": True})
        for start in range(0, len(jobs), BATCH):
            batch = jobs[start : start + BATCH]
            await asyncio.gather(*(_insert(store, job, request, now) for job in batch))


async def _insert(store: Store, seeded: SeededJob, request: EditRequest, now: float) -> None:
    job = lifecycle.new_job(seeded.job_id, request, now)
    job = dataclasses.replace(
        job, state=JobState.SUBMITTED, bfl_task_id=seeded.task_id, submitted_at=now, due_at=now + 3600
    )
    await store.insert(job)
