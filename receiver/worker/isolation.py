"""One job's failure stays that job's: an unexpected exception while handling it is logged with the
job id, counted, and recorded as a retry with backoff for that job alone (see `lifecycle.step_crashed`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from receiver import lifecycle
from receiver.errors import StoreUnavailable
from receiver.models import Job, JobState
from receiver.services import Services

log = structlog.get_logger("receiver.isolation")


async def isolated(svc: Services, stage: str, job: Job, handle: Callable[[], Awaitable[None]]) -> None:
    """Run `handle` for `job` (claimed in its current state); never raises `Exception`."""
    try:
        await handle()
    except StoreUnavailable as exc:  # not this job's fault: its claim lapses and it is due again
        log.warning("job.store_unavailable", stage=stage, job_id=job.id, error=str(exc))
    except Exception as exc:
        svc.metrics.job_step_crashes.labels(stage).inc()
        log.exception("job.step_crashed", stage=stage, job_id=job.id)
        await _record(svc, stage, job, job.state, f"{type(exc).__name__}: {exc}"[:500])


async def _record(svc: Services, stage: str, job: Job, state: JobState, message: str) -> None:
    try:
        await svc.update(job.id, lambda j: lifecycle.step_crashed(j, state, message, svc.clock(), svc.policy))
    except Exception:  # the store itself is failing: the claim lapses and the job is due again
        log.exception("job.crash_not_recorded", stage=stage, job_id=job.id)
