"""Deletes finished jobs older than `RECEIVER_RETENTION_DAYS`, with their images, in small batches.

Images go first, then the rows: a crash in between leaves rows whose images are gone, and the next
batch deletes them again (deleting a missing image is no error). Each batch waits for the webhooks
being answered (acknowledgements first) and is one short transaction.
"""

from __future__ import annotations

import anyio
import structlog

from receiver.blobs import BlobStore, image_key
from receiver.models import Job
from receiver.services import Services
from receiver.stores import Store
from receiver.worker.scheduler import Scheduler

log = structlog.get_logger("receiver.retention")

BATCH = 100
IDLE_S = 60.0  # how long to wait once nothing is old enough (at most a quarter of the retention)


async def run_retention(svc: Services, sched: Scheduler, days: float) -> None:
    """Purge batch after batch while there is something to purge, then look again later; until stop."""
    retention_s = days * 86_400.0
    while not sched.stopping.is_set():
        await sched.defer_to_webhooks()
        try:
            purged = await purge_expired(svc.store, svc.blobs, svc.clock() - retention_s)
        except Exception:  # a store or blob store blip: the same jobs are found again next time
            log.exception("retention.failed")
            purged = 0
        if purged < BATCH:
            with anyio.move_on_after(min(IDLE_S, retention_s / 4)):
                await sched.stopping.wait()


async def purge_expired(store: Store, blobs: BlobStore, before: float, batch: int = BATCH) -> int:
    """Delete one batch of jobs finished and created before `before`; return how many."""
    jobs = await store.expired_jobs(before, batch)
    if not jobs:
        return 0
    await blobs.delete([key for job in jobs for key in blob_keys(job)])
    deleted = await store.delete_jobs([job.id for job in jobs])
    log.info("retention.purged", jobs=deleted, oldest_created_at=jobs[0].created_at)
    return deleted


def blob_keys(job: Job) -> list[str]:
    """Every image the job has in the blob store: its inputs and its result."""
    keys = [stored.key for stored in job.inputs]
    if job.image is not None:
        keys.append(image_key(job.id, job.image.content_type))
    return keys
