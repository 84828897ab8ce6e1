"""Hands queued edits to BFL, never more at once than the account may have active: the store counts
the active tasks of every process that shares it as it hands out the jobs to submit."""

from __future__ import annotations

import base64

import anyio
import structlog

from receiver import lifecycle
from receiver.bfl.sansio import submit_body
from receiver.blobs.inputs import read_input
from receiver.errors import InputUnavailable, UpstreamError
from receiver.logs import about_job
from receiver.models import Job, Model
from receiver.services import Services
from receiver.stores import UpstreamLimits
from receiver.worker.handover import Work
from receiver.worker.scheduler import Scheduler

log = structlog.get_logger("receiver.submitter")


class Submitter:
    def __init__(self, svc: Services, sched: Scheduler, task_group: anyio.abc.TaskGroup) -> None:
        self.svc = svc
        self.sched = sched
        self.task_group = task_group
        settings = svc.settings
        self.limits = UpstreamLimits(settings.max_active, {Model.MAX: settings.max_active_kontext_max})

    async def step(self) -> bool:
        """Start as many submits as there are free upstream slots; True if any started."""
        svc = self.svc
        claimed = await svc.store.claim_submits(svc.clock(), svc.policy.lease_s, self.limits)
        for job in self.sched.hold(claimed):
            self.task_group.start_soon(self._submit, job)
        return bool(claimed)

    async def _submit(self, job: Job) -> None:
        with about_job(job.id, job.bfl_task_id):
            try:
                await self._submit_claimed(job)
            except Exception:  # the claim lapses and the job is tried again; the loop must live on
                log.exception("job.submit_crashed", job_id=job.id)
            else:
                self.sched.done(job)
            finally:
                self.sched.wake(Work.SUBMIT)

    async def _submit_claimed(self, job: Job) -> None:
        svc = self.svc
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
        body = submit_body(job.request, images, svc.webhook_url(job.id), svc.signer.secret_for(job.id))
        # Once the POST is out, BFL may have the task (and bills it): see it through to the record of
        # its id even while shutting down, or the next start would submit the edit a second time.
        with anyio.CancelScope(shield=True):
            try:
                with svc.metrics.submit_seconds.time():
                    accepted = await svc.bfl.submit(job.request.model, body)
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
            log.info(
                "job.submitted", job_id=job.id, bfl_task_id=accepted.task_id, model=job.request.model.value
            )
            await svc.update(job.id, lambda j: lifecycle.submitted(j, accepted, svc.clock(), svc.policy))

    async def _input_images(self, job: Job) -> list[str]:
        """The job's input images in base64, read back from the blob store (or, for a job accepted
        before inputs went there, from the store row that held its base64)."""
        if not job.inputs:
            legacy = await self.svc.store.legacy_input(job.id)
            return [legacy] if legacy is not None else []
        images = [await read_input(self.svc.blobs, stored) for stored in job.inputs]
        return await anyio.to_thread.run_sync(lambda: [base64.b64encode(data).decode() for data in images])
