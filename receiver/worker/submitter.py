"""Hands queued edits to BFL, never more at once than the account may have active: the store counts
the active tasks of every process that shares it as it hands out the jobs to submit. With
RECEIVER_MAX_CREDITS_PER_DAY, it counts the day's spend of them all too, and holds an edit that would
take it past the cap until the next day (UTC)."""

from __future__ import annotations

import base64
from collections.abc import Callable

import anyio
import stamina
import structlog

from receiver import credits, lifecycle
from receiver.bfl.sansio import Submitted, submit_body
from receiver.blobs.inputs import read_input
from receiver.errors import InputUnavailable, StoreUnavailable, UpstreamError
from receiver.logs import about_job
from receiver.models import Job, Transition
from receiver.services import Services
from receiver.stores import UpstreamLimits
from receiver.worker.handover import Work
from receiver.worker.isolation import isolated
from receiver.worker.scheduler import Scheduler

log = structlog.get_logger("receiver.submitter")


class Submitter:
    def __init__(self, svc: Services, sched: Scheduler, task_group: anyio.abc.TaskGroup) -> None:
        self.svc = svc
        self.sched = sched
        self.task_group = task_group
        settings, catalog = svc.settings, svc.catalog
        self.limits = UpstreamLimits(
            settings.max_active,
            tuple(catalog),
            {spec.name: settings.max_active_for(spec) for spec in catalog.values() if spec.active_limit},
        )

    async def step(self) -> bool:
        """Start as many submits as there are free upstream slots; True if any started."""
        svc = self.svc
        now = svc.clock()
        cap = svc.settings.max_credits_per_day
        budget = None if cap is None else credits.CreditBudget.of_day(cap, now, self._estimate)
        claimed = await svc.store.claim_submits(now, svc.policy.lease_s, self.limits, budget)
        for job in self.sched.hold(claimed):
            self.task_group.start_soon(self._submit, job)
        return bool(claimed)

    def _estimate(self, job: Job) -> float:
        spec = self.svc.catalog[job.request.model]
        return credits.estimate(spec, job.request, len(job.request.image_urls) or 1)

    async def _submit(self, job: Job) -> None:
        with about_job(job.id, job.bfl_task_id):
            try:
                await isolated(self.svc, "submit", job, lambda: self._submit_claimed(job))
                self.sched.done(job)
            finally:
                self.sched.wake(Work.SUBMIT)

    async def _submit_claimed(self, job: Job) -> None:
        svc = self.svc
        spec = svc.catalog[job.request.model]
        estimate = job.credit_estimate if job.credit_estimate is not None else self._estimate(job)
        try:
            images = await self._input_images(job)
        except InputUnavailable as exc:
            message = str(exc)
            log.error("job.input_unavailable", job_id=job.id, error=message)
            await svc.update(
                job.id, lambda j: lifecycle.input_unavailable(j, message, svc.clock(), svc.policy)
            )
            self.sched.wake(Work.PUBLISH)
            return
        body = submit_body(spec, job.request, images, svc.webhook_url(job.id), svc.signer.secret_for(job.id))
        # Once the POST is out, BFL may have the task (and bills it): see it through to the record of
        # its id even while shutting down, or the next start would submit the edit a second time.
        with anyio.CancelScope(shield=True):
            try:
                with svc.metrics.submit_seconds.time():
                    accepted = await svc.bfl.submit(spec, body)
            except UpstreamError as exc:
                refusal = exc
                log.warning("job.submit_refused", job_id=job.id, status=exc.status, detail=exc.detail)
                svc.metrics.submits.labels("retry" if exc.retryable else "refused").inc()
                await svc.update(
                    job.id, lambda j: lifecycle.submit_refused(j, refusal, svc.clock(), svc.policy)
                )
                self.sched.wake(Work.PUBLISH)
                return
            svc.metrics.submits.labels("accepted").inc()
            log.info("job.submitted", job_id=job.id, bfl_task_id=accepted.task_id, model=spec.name)
            await self._record_submitted(
                job,
                accepted,
                lambda j: lifecycle.submitted(
                    j, accepted, svc.clock(), svc.policy, estimate=estimate, webhooks=spec.webhooks
                ),
            )

    async def _record_submitted(
        self, job: Job, accepted: Submitted, change: Callable[[Job], Transition | None]
    ) -> None:
        """BFL has the task (and bills it): its id must be recorded, or the edit would be submitted again
        once the claim lapses. While the store is unavailable, keep trying within the claim."""
        svc = self.svc
        retrying = stamina.AsyncRetryingCaller(
            attempts=None, timeout=svc.policy.lease_s * 0.8, wait_initial=0.25, wait_max=5.0, wait_jitter=0.25
        )
        await retrying(StoreUnavailable, svc.update, job.id, change)

    async def _input_images(self, job: Job) -> list[str]:
        """The job's input images in base64, read back from the blob store (or, for a job accepted
        before inputs went there, from the store row that held its base64)."""
        if not job.inputs:
            legacy = await self.svc.store.legacy_input(job.id)
            return [legacy] if legacy is not None else []
        images = [await read_input(self.svc.blobs, stored) for stored in job.inputs]
        return await anyio.to_thread.run_sync(lambda: [base64.b64encode(data).decode() for data in images])
