"""`POST /v1/edits`: validate like BFL would, store the job, answer 202 at once."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from receiver import lifecycle
from receiver.bfl.validation import InputImage, parse_edit
from receiver.blobs.inputs import store_inputs
from receiver.errors import InvalidRequest, Problem, StorageUnavailable
from receiver.models import EditRequest, Model, StoredInput
from receiver.services import Services
from receiver.web.common import handover, parse_json, read_body, require_token, services
from receiver.web.views import job_view
from receiver.worker.handover import Work

log = structlog.get_logger("receiver.edits")

# A 20 MB image in base64 plus the other fields.
MAX_EDIT_BODY = 28 * 1024 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_IDEMPOTENCY_KEY = 255
FIELDS = frozenset(
    {
        "prompt",
        "image",
        "image_url",
        "model",
        "aspect_ratio",
        "seed",
        "output_format",
        "safety_tolerance",
        "prompt_upsampling",
        "metadata",
    }
)


def parse_edit_request(payload: Any) -> tuple[EditRequest, list[InputImage]]:
    """The job's request and its decoded input images (none when given by URL); `InvalidRequest`
    otherwise."""
    problems: list[Problem] = []
    if isinstance(payload, Mapping):
        problems += [
            Problem(("body", key), "Extra inputs are not permitted", "extra_forbidden")
            for key in sorted(set(payload) - FIELDS)
        ]
        model = payload.get("model", Model.PRO.value)
        if model not in {m.value for m in Model}:
            problems.append(
                Problem(("body", "model"), "Input should be 'flux-kontext-pro' or 'flux-kontext-max'", "enum")
            )
        metadata = payload.get("metadata", {})
        if not isinstance(metadata, dict):
            problems.append(Problem(("body", "metadata"), "Input should be a JSON object", "dict_type"))
        elif len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            problems.append(
                Problem(("body", "metadata"), f"metadata is over {MAX_METADATA_BYTES} bytes", "too_long")
            )
    try:
        fields = parse_edit(payload, image_keys=("image",), url_keys=("image_url",))
    except InvalidRequest as exc:
        problems += exc.problems
    if problems:
        raise InvalidRequest(problems)
    request = EditRequest(
        prompt=fields.prompt,
        model=Model(payload.get("model", Model.PRO.value)),
        image_url=fields.image_url,
        aspect_ratio=fields.aspect_ratio,
        seed=fields.seed,
        output_format=fields.output_format,
        safety_tolerance=fields.safety_tolerance,
        prompt_upsampling=fields.prompt_upsampling,
        metadata=payload.get("metadata") or {},
    )
    return request, [fields.image] if fields.image is not None else []


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def create_edit(request: Request) -> JSONResponse:
    require_token(request)
    svc = services(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            [Problem(("header", "Idempotency-Key"), "must be 1 to 255 characters", "string_type")]
        )
    body = await read_body(request, MAX_EDIT_BODY)
    # Decoding up to 28 MB of JSON and base64 would stall every other request: do it off the loop.
    edit, images = await anyio.to_thread.run_sync(lambda: parse_edit_request(parse_json(body)))
    job_id = str(uuid.uuid4())
    # The images are in the blob store before the job exists, so whoever submits it finds them.
    inputs = await store_inputs(svc.blobs, job_id, images)
    job = lifecycle.new_job(
        job_id, edit, svc.clock(), idempotency_key=key, fingerprint=fingerprint(body), inputs=inputs
    )
    try:
        stored = await svc.store.insert(job)
    except BaseException:
        await _discard(svc, inputs)
        raise
    headers = {"Location": f"/v1/jobs/{stored.id}"}
    if stored.id != job.id:  # the key was used before: that job and its images are the ones kept
        await _discard(svc, inputs)
        if stored.fingerprint != job.fingerprint:
            raise InvalidRequest(
                [
                    Problem(
                        ("header", "Idempotency-Key"),
                        "key was already used with a different request",
                        "idempotency",
                    )
                ]
            )
        return JSONResponse(
            job_view(stored), status_code=202, headers=headers | {"Idempotent-Replayed": "true"}
        )
    svc.metrics.inc("edits_accepted")
    log.info("job.created", job_id=job.id, model=edit.model.value)
    handover(request).wake(Work.SUBMIT)
    return JSONResponse(job_view(stored), status_code=202, headers=headers)


async def _discard(svc: Services, inputs: tuple[StoredInput, ...]) -> None:
    """Remove input images no job refers to; should that fail, they are only unused objects."""
    with anyio.CancelScope(shield=True):
        try:
            await svc.blobs.delete([item.key for item in inputs])
        except (OSError, StorageUnavailable) as exc:
            log.warning("job.inputs_not_removed", keys=[item.key for item in inputs], error=str(exc))
