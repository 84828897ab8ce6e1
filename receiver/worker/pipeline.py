"""A result BFL reported ready: download it into the blob store and write its event.

A download is retried a few times at once for blips (timeouts, 5xx, resets, a body cut short); past
that the job is due again later with backoff, until the task's deadline. An expired sample URL is
replaced by a fresh one from `get_result`; only when BFL no longer has the task is the job `expired`.
"""

from __future__ import annotations

import anyio
import stamina
import structlog

from receiver import lifecycle
from receiver.bfl.sansio import SAMPLE_URL_LIFETIME_S, Report, sample_expires_at
from receiver.errors import DownloadError, UpstreamError
from receiver.logs import about_job
from receiver.models import ImageInfo, Job, JobState
from receiver.retry import is_retryable
from receiver.services import Services
from receiver.stores import Delivery
from receiver.worker.fetch import fetch_sample
from receiver.worker.handover import Work
from receiver.worker.isolation import isolated
from receiver.worker.scheduler import Scheduler

log = structlog.get_logger("receiver.pipeline")

INLINE_ATTEMPTS = 3


async def claim_received(svc: Services, limit: int) -> list[Job]:
    """Received jobs that are due, each claimed for this worker."""
    return await svc.store.claim({JobState.RECEIVED}, svc.clock(), svc.policy.lease_s, limit)


async def fetch_and_store(svc: Services, sched: Scheduler, job: Job) -> None:
    with about_job(job.id, job.bfl_task_id):
        await isolated(svc, "fetch", job, lambda: _fetch_and_store(svc, sched, job))


async def _fetch_and_store(svc: Services, sched: Scheduler, job: Job) -> None:
    try:
        image = await _fetch(svc, job)
    except DownloadError as exc:
        failure = exc
        svc.metrics.downloads.labels("expired_url" if exc.url_expired else "failed").inc()
        log.warning("job.download_failed", job_id=job.id, attempt=job.attempts, error=str(exc))
        if exc.url_expired and await _refresh_sample(svc, sched, job):
            return
        await svc.update(job.id, lambda j: lifecycle.download_failed(j, failure, svc.clock(), svc.policy))
        sched.wake(Work.PUBLISH)
        return
    svc.metrics.downloads.labels("stored").inc()
    svc.metrics.download_bytes.observe(image.bytes)
    # The event's deliveries are written already claimed by this process: each sink's dispatcher takes
    # its own at once, and the download slot is free as soon as they are handed over.
    until = svc.clock() + svc.policy.lease_s
    _, changed = await svc.update(
        job.id, lambda j: lifecycle.stored(j, image, svc.clock(), svc.policy), claimed_until=until
    )
    if changed:
        log.info("job.stored", job_id=job.id, bytes=image.bytes, sha256=image.sha256)
        await sched.outbox.hand_over(
            [Delivery(job.id, sink, attempts=1, next_at=until) for sink in svc.sinks]
        )


async def _fetch(svc: Services, job: Job) -> ImageInfo:
    if job.sample_url is None:  # cannot happen: `reported` sets it with the state
        raise DownloadError(f"job {job.id} has no sample URL", retryable=False)
    # All tries end well within the claim, so no other worker starts the same download meanwhile.
    budget = svc.policy.lease_s * 0.8
    retrying = stamina.AsyncRetryingCaller(attempts=INLINE_ATTEMPTS, timeout=budget / 2)
    expires_at = sample_expires_at(job.sample_url)
    if expires_at is None:  # BFL's URLs live 10 minutes from the result
        expires_at = (job.bfl_finished_at or svc.clock()) + SAMPLE_URL_LIFETIME_S
    svc.metrics.sample_url_left.observe(max(0.0, expires_at - svc.clock()))
    try:
        with anyio.fail_after(budget), svc.metrics.download_seconds.time():
            return await retrying(
                is_retryable, fetch_sample, svc.downloads, job.sample_url, job.id, svc.blobs, svc.fetch_policy
            )
    except TimeoutError:
        raise DownloadError(f"download took longer than {budget:.0f} s", retryable=True) from None


async def _refresh_sample(svc: Services, sched: Scheduler, job: Job) -> bool:
    """Ask BFL about the task again; True if its answer settled what happens next."""
    if job.bfl_task_id is None:
        return False
    await sched.poll_budget.acquire()
    try:
        report = await svc.bfl.get_result(job.bfl_task_id, job.polling_url)
    except UpstreamError as exc:
        log.warning("job.refresh_failed", job_id=job.id, error=str(exc))
        return False
    if report.report is Report.READY:
        _, changed = await svc.update(
            job.id, lambda j: lifecycle.sample_refreshed(j, report, svc.clock(), svc.policy)
        )
        sched.wake(Work.FETCH)
        return changed
    if report.report is Report.NOT_FOUND:
        await svc.update(job.id, lambda j: lifecycle.task_gone(j, svc.clock(), svc.policy))
        sched.wake(Work.PUBLISH)
        return True
    log.warning("job.refresh_unexpected", job_id=job.id, status=report.status)
    return False
