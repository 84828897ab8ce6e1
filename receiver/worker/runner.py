"""Runs the background loops: submit, fetch, reconcile, the outbox's dispatchers (one per sink), and
retention when configured.

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
from receiver.services import Services
from receiver.worker.handover import Work
from receiver.worker.pipeline import claim_received, fetch_and_store
from receiver.worker.reconciler import reconcile_due
from receiver.worker.retention import run_retention
from receiver.worker.scheduler import Scheduler
from receiver.worker.submitter import Submitter

log = structlog.get_logger("receiver.runner")

IDLE_S = 1.0  # how long a loop with nothing to do waits before looking at the store again


async def run_workers(
    svc: Services, sched: Scheduler, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run until `sched.stop()`, then until the work in flight is done."""
    async with anyio.create_task_group() as work:
        submitter = Submitter(svc, sched, work)
        fetch_slots = anyio.Semaphore(svc.settings.download_concurrency)

        async def fetch_step() -> bool:
            handed = sched.handed_over
            jobs = [handed.popleft() for _ in range(min(fetch_slots.value, len(handed)))]
            free = fetch_slots.value - len(jobs)
            jobs += sched.hold(await claim_received(svc, free)) if free else []
            for job in jobs:
                await fetch_slots.acquire()
                work.start_soon(_fetch, fetch_slots, svc, sched, job)
            return bool(jobs)

        async def reconcile_step() -> bool:
            return await reconcile_due(svc, sched) > 0

        steps = {
            Work.SUBMIT: submitter.step,
            Work.FETCH: fetch_step,
            Work.RECONCILE: reconcile_step,
        }
        async with svc.store.watch(sched.changed), anyio.create_task_group() as loops:
            for name, step in steps.items():
                loops.start_soon(_loop, sched, name, step)
            loops.start_soon(sched.outbox.run, sched.stopping)
            if svc.settings.retention_days is not None:
                loops.start_soon(run_retention, svc, sched, svc.settings.retention_days)
            task_status.started()
    log.info("worker.stopped")


async def release_claims(svc: Services, sched: Scheduler) -> int:
    """Make everything this process still holds due now; return how many claims were released."""
    now = svc.clock()
    released = 0
    for job_id, version in list(sched.held_jobs.items()):
        job = await svc.store.get(job_id)
        if job is not None and job.version == version:  # untouched since our claim
            released_job = dataclasses.replace(job, due_at=now, submitting_until=None)
            released += await svc.store.save(released_job) is not None
    for delivery in sched.outbox.held():
        released_delivery = dataclasses.replace(delivery, next_at=now)
        released += await svc.store.save_delivery(released_delivery, expected_attempts=delivery.attempts)
    if released:
        log.info("worker.claims_released", count=released)
    return released


async def _loop(sched: Scheduler, name: Work, step: Callable[[], Awaitable[bool]]) -> None:
    wakeup = sched.wakeups[name]
    while not sched.stopping.is_set():
        wakeup.clear()
        await sched.defer_to_webhooks()
        try:
            busy = await step()
        except Exception:
            log.exception("worker.step_failed", loop=name.value)
            busy = False
        if not busy:
            await wakeup.wait(IDLE_S)


async def _fetch(slots: anyio.Semaphore, svc: Services, sched: Scheduler, job: Job) -> None:
    try:
        await fetch_and_store(svc, sched, job)
        sched.done(job)
    finally:
        slots.release()
        sched.wake(Work.FETCH)  # a free slot: take the next received job now, not after IDLE_S
