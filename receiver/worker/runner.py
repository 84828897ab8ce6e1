"""Runs the background loops beside the HTTP app: submit, fetch, reconcile, publish.

On stop, the loops take no new work; what is in flight finishes (the caller bounds how long), and
whatever is still claimed afterwards is released, so another replica or the next start resumes it at
once instead of waiting out its lease.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import structlog

from receiver.models import Job
from receiver.runtime import Runtime
from receiver.worker.pipeline import claim_received, fetch_and_store
from receiver.worker.publisher import publish_due
from receiver.worker.reconciler import reconcile_due
from receiver.worker.submitter import Submitter
from receiver.worker.wakeup import Wakeup

log = structlog.get_logger("receiver.runner")

IDLE_S = 1.0  # how long a loop with nothing to do waits before looking at the store again


async def run_workers(
    rt: Runtime, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run until `rt.stop()`, then until the work in flight is done."""
    async with anyio.create_task_group() as work:
        submitter = Submitter(rt, work)
        fetch_slots = anyio.Semaphore(rt.settings.download_concurrency)

        async def fetch_step() -> bool:
            jobs = [rt.handed_over.popleft() for _ in range(min(fetch_slots.value, len(rt.handed_over)))]
            free = fetch_slots.value - len(jobs)
            jobs += rt.hold(await claim_received(rt, free)) if free else []
            for job in jobs:
                await fetch_slots.acquire()
                work.start_soon(_fetch, fetch_slots, rt, job)
            return bool(jobs)

        async def reconcile_step() -> bool:
            return await reconcile_due(rt) > 0

        async def publish_step() -> bool:
            return await publish_due(rt) > 0

        async with anyio.create_task_group() as loops:
            loops.start_soon(_loop, rt, "submit", submitter.step, rt.wakeups.submit)
            loops.start_soon(_loop, rt, "fetch", fetch_step, rt.wakeups.fetch)
            loops.start_soon(_loop, rt, "reconcile", reconcile_step, rt.wakeups.reconcile)
            loops.start_soon(_loop, rt, "publish", publish_step, rt.wakeups.publish)
            task_status.started()
    log.info("worker.stopped")


async def release_claims(rt: Runtime) -> int:
    """Make everything this process still holds due now; return how many claims were released."""
    now = rt.clock()
    released = 0
    for job_id, version in list(rt.held_jobs.items()):
        job = await rt.store.get(job_id)
        if job is not None and job.version == version:  # untouched since our claim
            released += await rt.store.save(dataclasses.replace(job, due_at=now)) is not None
    for delivery in list(rt.held_deliveries.values()):
        released_delivery = dataclasses.replace(delivery, next_at=now)
        released += await rt.store.save_delivery(released_delivery, expected_attempts=delivery.attempts)
    if released:
        log.info("worker.claims_released", count=released)
    return released


async def _loop(rt: Runtime, name: str, step: Callable[[], Awaitable[bool]], wakeup: Wakeup) -> None:
    while not rt.stopping.is_set():
        wakeup.clear()
        await rt.defer_to_webhooks()
        try:
            busy = await step()
        except Exception:
            log.exception("worker.step_failed", loop=name)
            busy = False
        if not busy:
            await wakeup.wait(IDLE_S)


async def _fetch(slots: anyio.Semaphore, rt: Runtime, job: Job) -> None:
    try:
        await fetch_and_store(rt, job)
    except Exception:  # even recording the failure failed: the claim lapses and the job is fetched again
        log.exception("job.fetch_crashed", job_id=job.id)
    else:
        rt.done(job)
    finally:
        slots.release()
        rt.wakeups.fetch.set()  # a free slot: take the next received job now, not after IDLE_S
