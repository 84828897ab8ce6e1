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
from receiver.runtime import Runtime

log = structlog.get_logger("receiver.submitter")


class Submitter:
    def __init__(self, rt: Runtime, task_group: anyio.abc.TaskGroup) -> None:
        self.rt = rt
        self.task_group = task_group
        self.in_flight: Counter[Model] = Counter()

    async def step(self) -> bool:
        """Start as many submits as there are free upstream slots; True if any started."""
        rt = self.rt
        active = await rt.store.count({JobState.SUBMITTED}) + self.in_flight.total()
        active_max = await rt.store.count({JobState.SUBMITTED}, Model.MAX) + self.in_flight[Model.MAX]
        free = rt.settings.max_active - active
        free_max = min(free, rt.settings.max_active_kontext_max - active_max)
        if free <= 0:
            return False
        now = rt.clock()
        # Asked for per model, so kontext-max jobs waiting for their smaller quota never block the rest.
        lease = rt.policy.lease_s
        claimed = (
            await rt.store.claim({JobState.CREATED}, now, lease, free_max, Model.MAX) if free_max > 0 else []
        )
        claimed += await rt.store.claim({JobState.CREATED}, now, lease, free - len(claimed), Model.PRO)
        for job in rt.hold(claimed):
            self.in_flight[job.request.model] += 1
            self.task_group.start_soon(self._submit, job)
        return bool(claimed)

    async def _submit(self, job: Job) -> None:
        rt = self.rt
        try:
            await self._submit_claimed(job)
        except Exception:  # the claim lapses and the job is tried again; the loop must live on
            log.exception("job.submit_crashed", job_id=job.id)
        else:
            rt.done(job)
        finally:
            self.in_flight[job.request.model] -= 1
            rt.wakeups.submit.set()

    async def _submit_claimed(self, job: Job) -> None:
        rt = self.rt
        try:
            images = await self._input_images(job)
        except InputUnavailable as exc:
            message = str(exc)
            log.error("job.input_unavailable", job_id=job.id, error=message)
            await rt.update(job.id, lambda j: lifecycle.input_unavailable(j, message, rt.clock(), rt.policy))
            rt.wakeups.publish.set()
            return
        body = submit_body(job.request, images, rt.webhook_url(job.id), rt.signer.secret_for(job.id))
        # Once the POST is out, BFL may have the task (and bills it): see it through to the record of
        # its id even while shutting down, or the next start would submit the edit a second time.
        with anyio.CancelScope(shield=True):
            try:
                accepted = await rt.bfl.submit(job.request.model, body)
            except UpstreamError as exc:
                refusal = exc
                log.warning("job.submit_refused", job_id=job.id, status=exc.status, detail=exc.detail)
                rt.metrics.inc("submits", outcome="retry" if exc.retryable else "refused")
                await rt.update(job.id, lambda j: lifecycle.submit_refused(j, refusal, rt.clock(), rt.policy))
                rt.wakeups.publish.set()
                return
            rt.metrics.inc("submits", outcome="accepted")
            log.info(
                "job.submitted", job_id=job.id, bfl_task_id=accepted.task_id, model=job.request.model.value
            )
            await rt.update(job.id, lambda j: lifecycle.submitted(j, accepted, rt.clock(), rt.policy))

    async def _input_images(self, job: Job) -> list[str]:
        """The job's input images in base64, read back from the blob store (or, for a job accepted
        before inputs went there, from the store row that held its base64)."""
        if not job.inputs:
            legacy = await self.rt.store.legacy_input(job.id)
            return [legacy] if legacy is not None else []
        images = [await read_input(self.rt.blobs, stored) for stored in job.inputs]
        return await anyio.to_thread.run_sync(lambda: [base64.b64encode(data).decode() for data in images])
