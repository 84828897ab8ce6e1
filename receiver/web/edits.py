"""`POST /v1/edits`: validate like BFL would, store the job, answer 202 at once."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import anyio.to_thread
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from receiver import lifecycle
from receiver.errors import Conflict, InvalidRequest, Problem
from receiver.models import Job
from receiver.services import Services
from receiver.web.common import handover, limits, parse_json, read_body, require_token, services
from receiver.web.inputs import discard, store_edit_inputs
from receiver.web.limits import RequestLimits
from receiver.web.schemas import EDIT_BODIES, EditBodies, EditBody, input_megapixels, megapixels
from receiver.web.views import job_view
from receiver.worker.handover import Work

log = structlog.get_logger("receiver.edits")

# Up to 8 images (the FLUX.2 models) in base64 with the other fields; each image at most 20 MB.
MAX_EDIT_BODY = 64 * 1024 * 1024
MAX_IDEMPOTENCY_KEY = 255


def parse_edit_request(body: bytes, bodies: EditBodies = EDIT_BODIES) -> tuple[EditBody, str]:
    """The valid edit body (its images decoded, those given by URL not yet fetched) and its
    fingerprint; `BadRequest` for a body that is not JSON, `InvalidRequest` for one that is not a valid
    edit for its model."""
    value = parse_json(body)
    return bodies.parse(value), fingerprint(value)


def fingerprint(value: Any) -> str:
    """The same JSON value gives the same digest whatever its key order and spacing, so a client that
    serialises its retry afresh replays its job rather than meet a 409."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def create_edit(request: Request) -> JSONResponse:
    require_token(request)
    svc = services(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            [Problem(("header", "Idempotency-Key"), "must be 1 to 255 characters", "string_type")]
        )
    bounds = limits(request)
    with bounds.uploads.take():  # each body may be 28 MiB, held until the job is stored
        return await _accept(request, svc, bounds, key)


async def _accept(request: Request, svc: Services, bounds: RequestLimits, key: str | None) -> JSONResponse:
    body = await read_body(request, MAX_EDIT_BODY)
    bodies: EditBodies = request.app.state.edit_bodies
    # Decoding up to 64 MB of JSON and base64 would stall every other request: do it off the loop.
    edit, digest = await anyio.to_thread.run_sync(parse_edit_request, body, bodies)
    if key is not None:  # a replay is answered before any image is downloaded or stored again
        earlier = await svc.store.keyed(key)
        if earlier is not None:
            return _replayed(earlier, key, digest)
    await bounds.queue.check(svc.store)
    job_id = str(uuid.uuid4())
    # The images are in the blob store before the job exists, so whoever submits it finds them.
    inputs = await store_edit_inputs(
        svc.blobs,
        svc.input_downloads,
        svc.input_policy,
        svc.metrics,
        svc.settings.input_fetch_timeout_s,
        job_id,
        edit.input_fields,
    )
    too_large = input_megapixels(bodies.catalog[edit.model], megapixels(inputs))
    if too_large:  # known only now for images given by URL
        await discard(svc.blobs, inputs)
        raise InvalidRequest(too_large)
    job = lifecycle.new_job(
        job_id, edit.to_request(inputs), svc.clock(), idempotency_key=key, fingerprint=digest, inputs=inputs
    )
    try:
        stored = await svc.store.insert(job)
    except BaseException:
        await discard(svc.blobs, inputs)
        raise
    if stored.id != job.id:  # the key was taken meanwhile: that job and its images are the ones kept
        await discard(svc.blobs, inputs)
        return _replayed(stored, key, digest)
    bounds.queue.added()
    svc.metrics.edits.inc()
    log.info("job.created", job_id=job.id, model=edit.model)
    handover(request).wake(Work.SUBMIT)
    return JSONResponse(job_view(stored), status_code=202, headers={"Location": f"/v1/jobs/{stored.id}"})


def _replayed(job: Job, key: str | None, digest: str) -> JSONResponse:
    """The answer to a request whose Idempotency-Key names `job`: that job, or 409 for another body."""
    if job.fingerprint != digest:
        raise Conflict(f"Idempotency-Key {key!r} was already used with a different request")
    headers = {"Location": f"/v1/jobs/{job.id}", "Idempotent-Replayed": "true"}
    return JSONResponse(job_view(job), status_code=202, headers=headers)
