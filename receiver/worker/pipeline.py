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
from receiver.bfl.sansio import Report
from receiver.errors import DownloadError, UpstreamError
from receiver.models import ImageInfo, Job, JobState
from receiver.retry import is_retryable
from receiver.runtime import Runtime
from receiver.stores import Delivery
from receiver.worker.fetch import fetch_sample
from receiver.worker.publisher import deliver_claimed

log = structlog.get_logger("receiver.pipeline")

INLINE_ATTEMPTS = 3


async def claim_received(rt: Runtime, limit: int) -> list[Job]:
    """Received jobs that are due, each claimed for this worker."""
    return await rt.store.claim({JobState.RECEIVED}, rt.clock(), rt.policy.lease_s, limit)


async def fetch_and_store(rt: Runtime, job: Job) -> None:
    try:
        await _fetch_and_store(rt, job)
    except Exception as exc:  # a failure outside the download itself: try again later, within the deadline
        log.exception("job.fetch_crashed", job_id=job.id)
        failure = DownloadError(f"{type(exc).__name__}: {exc}", retryable=True)
        await rt.update(job.id, lambda j: lifecycle.download_failed(j, failure, rt.clock(), rt.policy))


async def _fetch_and_store(rt: Runtime, job: Job) -> None:
    try:
        image = await _fetch(rt, job)
    except DownloadError as exc:
        failure = exc
        rt.metrics.inc("downloads", outcome="expired_url" if exc.url_expired else "failed")
        log.warning("job.download_failed", job_id=job.id, attempt=job.attempts, error=str(exc))
        if exc.url_expired and await _refresh_sample(rt, job):
            return
        await rt.update(job.id, lambda j: lifecycle.download_failed(j, failure, rt.clock(), rt.policy))
        rt.wakeups.publish.set()
        return
    rt.metrics.inc("downloads", outcome="stored")
    # The event's deliveries are written already claimed by this task, which delivers them right away.
    until = rt.clock() + rt.policy.lease_s
    _, changed = await rt.update(
        job.id, lambda j: lifecycle.stored(j, image, rt.clock(), rt.policy), claimed_until=until
    )
    if changed:
        log.info("job.stored", job_id=job.id, bytes=image.bytes, sha256=image.sha256)
        await deliver_claimed(rt, [Delivery(job.id, sink, attempts=1, next_at=until) for sink in rt.sinks])


async def _fetch(rt: Runtime, job: Job) -> ImageInfo:
    if job.sample_url is None:  # cannot happen: `reported` sets it with the state
        raise DownloadError(f"job {job.id} has no sample URL", retryable=False)
    # All tries end well within the claim, so no other worker starts the same download meanwhile.
    budget = rt.policy.lease_s * 0.8
    retrying = stamina.AsyncRetryingCaller(attempts=INLINE_ATTEMPTS, timeout=budget / 2)
    try:
        with anyio.fail_after(budget):
            return await retrying(
                is_retryable, fetch_sample, rt.downloads, job.sample_url, job.id, rt.blobs, rt.fetch_policy
            )
    except TimeoutError:
        raise DownloadError(f"download took longer than {budget:.0f} s", retryable=True) from None


async def _refresh_sample(rt: Runtime, job: Job) -> bool:
    """Ask BFL about the task again; True if its answer settled what happens next."""
    if job.bfl_task_id is None:
        return False
    await rt.poll_budget.acquire()
    try:
        report = await rt.bfl.get_result(job.bfl_task_id, job.polling_url)
    except UpstreamError as exc:
        log.warning("job.refresh_failed", job_id=job.id, error=str(exc))
        return False
    if report.report is Report.READY:
        _, changed = await rt.update(
            job.id, lambda j: lifecycle.sample_refreshed(j, report, rt.clock(), rt.policy)
        )
        rt.wakeups.fetch.set()
        return changed
    if report.report is Report.NOT_FOUND:
        await rt.update(job.id, lambda j: lifecycle.task_gone(j, rt.clock(), rt.policy))
        rt.wakeups.publish.set()
        return True
    log.warning("job.refresh_unexpected", job_id=job.id, status=report.status)
    return False
