"""Runs the background loops beside the HTTP app: submit, fetch, reconcile, publish."""

from __future__ import annotations

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
    async with anyio.create_task_group() as tg:
        submitter = Submitter(rt, tg)
        fetch_slots = anyio.Semaphore(rt.settings.download_concurrency)

        async def fetch_step() -> bool:
            free = fetch_slots.value
            if free == 0:
                return False
            jobs = await claim_received(rt, free)
            for job in jobs:
                await fetch_slots.acquire()
                tg.start_soon(_fetch, fetch_slots, rt, job)
            return bool(jobs)

        async def reconcile_step() -> bool:
            return await reconcile_due(rt) > 0

        async def publish_step() -> bool:
            return await publish_due(rt) > 0

        tg.start_soon(_loop, "submit", submitter.step, rt.wakeups.submit)
        tg.start_soon(_loop, "fetch", fetch_step, rt.wakeups.fetch)
        tg.start_soon(_loop, "reconcile", reconcile_step, Wakeup())
        tg.start_soon(_loop, "publish", publish_step, rt.wakeups.publish)
        task_status.started()


async def _loop(name: str, step: Callable[[], Awaitable[bool]], wakeup: Wakeup) -> None:
    while True:
        wakeup.clear()
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
    except Exception:  # the claim lapses and the job is fetched again; the loop must live on
        log.exception("job.fetch_crashed", job_id=job.id)
    finally:
        slots.release()
