"""`POST /webhooks/bfl/{job_id}`: verify, persist, answer. The work happens after the answer."""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from receiver import lifecycle
from receiver.bfl.sansio import Report, TaskReport, parse_webhook
from receiver.errors import BadRequest, Conflict, NotFound, Unauthorized, Unavailable, UpstreamError
from receiver.models import AWAITING_UPSTREAM, Job, JobState, Via
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
        _check_task(svc, await _job(svc, job_id), report)
        svc.metrics.webhooks.labels("progress").inc()
        return JSONResponse({"status": "ignored", "reason": f"non-terminal status {report.status!r}"})
    if svc.settings.confirm_webhooks:
        known = await _job(svc, job_id)
        _check_task(svc, known, report)
        if known.state in AWAITING_UPSTREAM:
            report = await _confirmed(svc, known, report)
            if report.report is Report.RUNNING:
                svc.metrics.webhooks.labels("unconfirmed").inc()
                reason = f"BFL says the task is {report.status!r}"
                return JSONResponse({"status": "ignored", "reason": reason})
    now = svc.clock()
    take = work.can_take_download()
    job, changed = await svc.update(
        job_id, lambda j: lifecycle.reported(j, report, Via.WEBHOOK, now, svc.policy, take=take)
    )
    if job is None:
        raise NotFound(f"no job {job_id}")
    if not changed:
        _check_task(svc, job, report)  # `reported` changes nothing for another task's webhook
        svc.metrics.webhooks.labels("duplicate").inc()
        log.info("webhook.duplicate", job_id=job_id, bfl_task_id=job.bfl_task_id, state=job.state.value)
        return JSONResponse({"status": "duplicate", "state": job.state.value})
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


async def _job(svc: Services, job_id: str) -> Job:
    job = await svc.store.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def _check_task(svc: Services, job: Job, report: TaskReport) -> None:
    """A webhook speaks for its own task only: one naming another task than the job's changes nothing."""
    if report.task_id and job.bfl_task_id and report.task_id != job.bfl_task_id:
        svc.metrics.webhooks.labels("task_mismatch").inc()
        log.warning("webhook.task_mismatch", job_id=job.id, expected=job.bfl_task_id, got=report.task_id)
        raise Conflict(f"the webhook is about task {report.task_id!r}, not this job's task")


async def _confirmed(svc: Services, job: Job, report: TaskReport) -> TaskReport:
    """With RECEIVER_CONFIRM_WEBHOOKS, what BFL itself says about the task: the webhook is only a hint
    (someone holding a leaked per-job secret cannot make up a result)."""
    task_id = job.bfl_task_id or report.task_id
    if task_id is None:  # parse_webhook requires one
        raise BadRequest("webhook body has no task id")
    try:
        confirmed = await svc.bfl.get_result(task_id, job.polling_url)
    except UpstreamError as exc:
        log.warning("webhook.unconfirmed", job_id=job.id, error=str(exc))
        raise Unavailable(
            "BFL could not confirm the task just now", retry_after=exc.retry_after or 5
        ) from None
    return confirmed
