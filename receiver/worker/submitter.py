"""Hands queued edits to BFL, never more at once than the account may have active."""

from __future__ import annotations

import base64
from collections import Counter

import anyio
import structlog

from receiver import lifecycle
from receiver.bfl.sansio import submit_body
from receiver.blobs.inputs import read_input
from receiver.errors import InputUnavailable, UpstreamError
from receiver.models import Job, JobState, Model
from receiver.services import Services
from receiver.worker.handover import Work
from receiver.worker.scheduler import Scheduler

log = structlog.get_logger("receiver.submitter")


class Submitter:
    def __init__(self, svc: Services, sched: Scheduler, task_group: anyio.abc.TaskGroup) -> None:
        self.svc = svc
        self.sched = sched
        self.task_group = task_group
        self.in_flight: Counter[Model] = Counter()

    async def step(self) -> bool:
        """Start as many submits as there are free upstream slots; True if any started."""
        svc = self.svc
        limit, limit_max = svc.settings.max_active, svc.settings.max_active_kontext_max
        active = await svc.store.count({JobState.SUBMITTED}, at_most=limit) + self.in_flight.total()
        submitted_max = await svc.store.count({JobState.SUBMITTED}, Model.MAX, at_most=limit_max)
        free = limit - active
        free_max = min(free, limit_max - submitted_max - self.in_flight[Model.MAX])
        if free <= 0:
            return False
        now = svc.clock()
        # Asked for per model, so kontext-max jobs waiting for their smaller quota never block the rest.
        lease = svc.policy.lease_s
        claimed = (
            await svc.store.claim({JobState.CREATED}, now, lease, free_max, Model.MAX) if free_max > 0 else []
        )
        claimed += await svc.store.claim({JobState.CREATED}, now, lease, free - len(claimed), Model.PRO)
        for job in self.sched.hold(claimed):
            self.in_flight[job.request.model] += 1
            self.task_group.start_soon(self._submit, job)
        return bool(claimed)

    async def _submit(self, job: Job) -> None:
        try:
            await self._submit_claimed(job)
        except Exception:  # the claim lapses and the job is tried again; the loop must live on
            log.exception("job.submit_crashed", job_id=job.id)
        else:
            self.sched.done(job)
        finally:
            self.in_flight[job.request.model] -= 1
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
                accepted = await svc.bfl.submit(job.request.model, body)
            except UpstreamError as exc:
                refusal = exc
                log.warning("job.submit_refused", job_id=job.id, status=exc.status, detail=exc.detail)
                svc.metrics.inc("submits", outcome="retry" if exc.retryable else "refused")
                await svc.update(
                    job.id, lambda j: lifecycle.submit_refused(j, refusal, svc.clock(), svc.policy)
                )
                self.sched.wake(Work.PUBLISH)
                return
            svc.metrics.inc("submits", outcome="accepted")
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
