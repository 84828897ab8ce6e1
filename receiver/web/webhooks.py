"""`POST /webhooks/bfl/{job_id}`: verify, persist, answer. The work happens after the answer."""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from receiver import lifecycle
from receiver.bfl.sansio import Report, parse_webhook
from receiver.errors import NotFound, Unauthorized
from receiver.models import JobState, Via
from receiver.services import Services
from receiver.stores.urgency import urgent
from receiver.web.common import handover, parse_json, read_body, services
from receiver.worker.handover import Handover, Work

log = structlog.get_logger("receiver.webhooks")

MAX_WEBHOOK_BODY = 64 * 1024


async def bfl_webhook(request: Request) -> JSONResponse:
    work = handover(request)
    with work.answering_webhook(), urgent():  # BFL waits for this answer: its writes go first
        return await _answer(request, services(request), work)


async def _answer(request: Request, svc: Services, work: Handover) -> JSONResponse:
    job_id = request.path_params["job_id"]
    secret = request.headers.get("x-webhook-secret")
    if secret is None or not svc.signer.verify(job_id, secret):
        svc.metrics.webhooks.labels("unauthorized").inc()
        log.warning("webhook.unauthorized", job_id=job_id, secret_present=secret is not None)
        raise Unauthorized("missing or wrong X-Webhook-Secret")
    body = await read_body(request, MAX_WEBHOOK_BODY)
    signature = request.headers.get("x-bfl-signature")
    if signature is not None and not svc.signer.verify_body_signature(secret, body, signature):
        svc.metrics.webhooks.labels("bad_signature").inc()
        raise Unauthorized("X-BFL-Signature does not match the body")
    report = parse_webhook(parse_json(body))
    if report.report is Report.RUNNING:
        if await svc.store.get(job_id) is None:
            raise NotFound(f"no job {job_id}")
        svc.metrics.webhooks.labels("progress").inc()
        return JSONResponse({"status": "ignored", "reason": f"non-terminal status {report.status!r}"})
    now = svc.clock()
    take = work.can_take_download()
    job, changed = await svc.update(
        job_id, lambda j: lifecycle.reported(j, report, Via.WEBHOOK, now, svc.policy, take=take)
    )
    if job is None:
        raise NotFound(f"no job {job_id}")
    if not changed:
        svc.metrics.webhooks.labels("duplicate").inc()
        log.info("webhook.duplicate", job_id=job_id, bfl_task_id=job.bfl_task_id, state=job.state.value)
        return JSONResponse({"status": "duplicate", "state": job.state.value})
    if report.task_id and job.bfl_task_id and report.task_id != job.bfl_task_id:
        log.warning(
            "webhook.task_mismatch", job_id=job_id, bfl_task_id=job.bfl_task_id, reported=report.task_id
        )
    svc.metrics.webhooks.labels("accepted").inc()
    log.info(
        "webhook.accepted",
        job_id=job_id,
        bfl_task_id=job.bfl_task_id,
        status=report.status,
        state=job.state.value,
    )
    if take and job.state is JobState.RECEIVED:
        work.take_download(job)
    else:
        work.wake(Work.FETCH, Work.PUBLISH)
    work.wake(Work.SUBMIT)
    return JSONResponse({"status": "accepted", "state": job.state.value})
