"""Recovers lost webhooks: a task with no webhook by its deadline is asked about through `get_result`."""

from __future__ import annotations

import structlog

from receiver import lifecycle
from receiver.bfl.sansio import Report
from receiver.errors import UpstreamError
from receiver.models import Job, JobState, Via
from receiver.runtime import Runtime

log = structlog.get_logger("receiver.reconciler")


async def reconcile_due(rt: Runtime, limit: int = 20) -> int:
    """Poll every submitted job whose webhook is overdue; return how many were polled."""
    jobs = rt.hold(await rt.store.claim({JobState.SUBMITTED}, rt.clock(), rt.policy.lease_s, limit))
    for job in jobs:
        if rt.stopping.is_set():
            break
        await rt.poll_budget.acquire()
        await poll(rt, job)
        rt.done(job)
    return len(jobs)


async def poll(rt: Runtime, job: Job) -> None:
    if job.bfl_task_id is None:  # cannot happen: `submitted` records the id with the state
        raise ValueError(f"job {job.id} was submitted without a task id")
    try:
        report = await rt.bfl.get_result(job.bfl_task_id, job.polling_url)
        rt.metrics.inc("polls", status=report.report.value)
    except UpstreamError as exc:
        log.warning("job.poll_failed", job_id=job.id, error=str(exc))
        report = None
    if report is None or report.report is Report.RUNNING:  # ask again later, or give up at the deadline
        await rt.update(job.id, lambda j: lifecycle.still_running(j, rt.clock(), rt.policy))
        return
    _, changed = await rt.update(
        job.id, lambda j: lifecycle.reported(j, report, Via.POLL, rt.clock(), rt.policy)
    )
    if changed:
        log.info("job.recovered_by_poll", job_id=job.id, status=report.status)
        rt.wakeups.fetch.set()
        rt.wakeups.publish.set()
        rt.wakeups.submit.set()
