"""Recovers lost webhooks: a task with no webhook by its deadline is asked about through `get_result`."""

from __future__ import annotations

from functools import partial

import structlog

from receiver import lifecycle
from receiver.bfl.sansio import Report
from receiver.errors import UpstreamError
from receiver.logs import about_job
from receiver.models import Job, JobState, Via
from receiver.services import Services
from receiver.worker.handover import Work
from receiver.worker.isolation import isolated
from receiver.worker.scheduler import Scheduler

log = structlog.get_logger("receiver.reconciler")


async def reconcile_due(svc: Services, sched: Scheduler, limit: int = 20) -> int:
    """Poll every submitted job whose webhook is overdue; return how many were polled."""
    jobs = sched.hold(await svc.store.claim({JobState.SUBMITTED}, svc.clock(), svc.policy.lease_s, limit))
    for job in jobs:
        if sched.stopping.is_set():
            break
        await sched.poll_budget.acquire()
        await isolated(svc, "reconcile", job, partial(poll, svc, sched, job))
        sched.done(job)
    return len(jobs)


async def poll(svc: Services, sched: Scheduler, job: Job) -> None:
    if job.bfl_task_id is None:  # cannot happen: `submitted` records the id with the state
        raise ValueError(f"job {job.id} was submitted without a task id")
    with about_job(job.id, job.bfl_task_id):
        await _poll(svc, sched, job, job.bfl_task_id)


async def _poll(svc: Services, sched: Scheduler, job: Job, bfl_task_id: str) -> None:
    try:
        report = await svc.bfl.get_result(bfl_task_id, job.polling_url)
        svc.metrics.polls.labels(report.report.value).inc()
    except UpstreamError as exc:
        log.warning("job.poll_failed", job_id=job.id, error=str(exc))
        report = None
    now = svc.clock()
    if (
        report is None
        or report.report is Report.RUNNING
        or lifecycle.not_known_yet(job, report, now, svc.policy)
    ):
        # Ask again later (soon for a model that sends no webhooks), or give up at the deadline.
        spec = svc.catalog.get(job.request.model)
        webhooks = spec is None or spec.webhooks
        await svc.update(job.id, lambda j: lifecycle.still_running(j, now, svc.policy, webhooks=webhooks))
        return
    _, changed = await svc.update(
        job.id, lambda j: lifecycle.reported(j, report, Via.POLL, svc.clock(), svc.policy)
    )
    if changed:
        log.info("job.recovered_by_poll", job_id=job.id, status=report.status)
        sched.wake(Work.FETCH, Work.PUBLISH, Work.SUBMIT)
