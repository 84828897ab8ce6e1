"""A result BFL reported ready: download it into the blob store and write its event."""

from __future__ import annotations

import structlog

from receiver import lifecycle
from receiver.bfl.sansio import Report
from receiver.errors import DownloadError, UpstreamError
from receiver.models import Job, JobState
from receiver.runtime import Runtime
from receiver.stores import mutate
from receiver.worker.fetch import fetch_sample

log = structlog.get_logger("receiver.pipeline")


async def claim_received(rt: Runtime, limit: int) -> list[Job]:
    """Received jobs that are due, each claimed for this worker."""
    return await rt.store.claim({JobState.RECEIVED}, rt.clock(), rt.policy.lease_s, limit)


async def fetch_and_store(rt: Runtime, job: Job) -> None:
    if job.sample_url is None:  # cannot happen: `reported` sets it with the state
        raise ValueError(f"job {job.id} was received without a sample URL")
    sinks = list(rt.sinks)
    try:
        image = await fetch_sample(rt.http, job.sample_url, job.id, rt.blobs, rt.fetch_policy)
    except DownloadError as exc:
        failure = exc
        rt.metrics.inc("downloads", outcome="expired_url" if exc.url_expired else "failed")
        log.warning("job.download_failed", job_id=job.id, attempt=job.attempts, error=str(exc))
        if exc.url_expired and await _refresh_sample(rt, job):
            return
        await mutate(
            rt.store, job.id, lambda j: lifecycle.download_failed(j, failure, rt.clock(), rt.policy), sinks
        )
        rt.wakeups.publish.set()
        return
    rt.metrics.inc("downloads", outcome="stored")
    _, changed = await mutate(
        rt.store, job.id, lambda j: lifecycle.stored(j, image, rt.clock(), rt.policy), sinks
    )
    if changed:
        log.info("job.stored", job_id=job.id, bytes=image.bytes, sha256=image.sha256)
        rt.wakeups.publish.set()


async def _refresh_sample(rt: Runtime, job: Job) -> bool:
    """Ask BFL for a fresh signed URL; True if the job's state was settled by the answer."""
    if job.bfl_task_id is None or job.attempts >= rt.policy.max_download_attempts:
        return False
    try:
        report = await rt.bfl.get_result(job.bfl_task_id, job.polling_url)
    except UpstreamError as exc:
        log.warning("job.refresh_failed", job_id=job.id, error=str(exc))
        return False
    sinks = list(rt.sinks)
    if report.report is Report.READY:
        _, changed = await mutate(
            rt.store, job.id, lambda j: lifecycle.sample_refreshed(j, report, rt.clock())
        )
        rt.wakeups.fetch.set()
        return changed
    if report.report is Report.NOT_FOUND:
        await mutate(rt.store, job.id, lambda j: lifecycle.task_gone(j, rt.clock(), rt.policy), sinks)
        rt.wakeups.publish.set()
        return True
    log.warning("job.refresh_unexpected", job_id=job.id, status=report.status)
    return False
