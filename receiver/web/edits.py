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
from receiver.bfl.validation import ImageSlot, InputImage, Loc, parse_edit
from receiver.blobs.inputs import store_inputs
from receiver.catalog import CATALOG, OPTIONAL_FIELDS, Catalog
from receiver.errors import InvalidRequest, Problem, StorageUnavailable
from receiver.models import EditRequest, StoredInput
from receiver.services import Services
from receiver.web.common import handover, parse_json, read_body, require_token, services
from receiver.web.views import job_view
from receiver.worker.handover import Work

log = structlog.get_logger("receiver.edits")

# Up to 8 images of the FLUX.2 models in base64 with the other fields; each image at most 20 MB.
MAX_EDIT_BODY = 64 * 1024 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_IDEMPOTENCY_KEY = 255
FIELDS = frozenset(
    {
        "prompt",
        "image",
        "image_url",
        "images",
        "model",
        "seed",
        "output_format",
        "safety_tolerance",
        "metadata",
        *OPTIONAL_FIELDS,
    }
)
IMAGE_FORMS = ("image", "image_url", "images")
_NOT_A_LIST = ("Input should be a list of base64 images or http(s) URLs", "list_type")


def parse_edit_request(payload: Any, catalog: Catalog = CATALOG) -> tuple[EditRequest, list[InputImage]]:
    """The job's request and its decoded input images (in order; those given by URL are named in
    `image_urls`); `InvalidRequest` listing every problem otherwise, the model's limits included."""
    problems: list[Problem] = []
    spec = catalog.default
    if isinstance(payload, Mapping):
        problems += [
            Problem(("body", key), "Extra inputs are not permitted", "extra_forbidden")
            for key in sorted(set(payload) - FIELDS)
        ]
        model = payload.get("model", spec.name)
        if isinstance(model, str) and model in catalog:
            spec = catalog[model]
        else:
            names = ", ".join(catalog)
            problems.append(Problem(("body", "model"), f"Input should be one of: {names}", "enum"))
        forms = [key for key in IMAGE_FORMS if payload.get(key) is not None]
        if len(forms) > 1:
            problems.append(
                Problem(
                    ("body", forms[1]),
                    f"give only one of image, image_url or images, not {' and '.join(forms)}",
                    "conflict",
                )
            )
        metadata = payload.get("metadata", {})
        if not isinstance(metadata, dict):
            problems.append(Problem(("body", "metadata"), "Input should be a JSON object", "dict_type"))
        elif len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            problems.append(
                Problem(("body", "metadata"), f"metadata is over {MAX_METADATA_BYTES} bytes", "too_long")
            )
    try:
        fields = parse_edit(payload, spec, _image_slots, strict=True)
    except InvalidRequest as exc:
        problems += exc.problems
    if problems:
        raise InvalidRequest(problems)
    request = EditRequest(
        prompt=fields.prompt,
        model=spec.name,
        image_urls=tuple(image if isinstance(image, str) else None for image in fields.images),
        aspect_ratio=fields.aspect_ratio,
        seed=fields.seed,
        width=fields.width,
        height=fields.height,
        steps=fields.steps,
        guidance=fields.guidance,
        output_format=fields.output_format,
        safety_tolerance=fields.safety_tolerance,
        prompt_upsampling=fields.prompt_upsampling,
        metadata=payload.get("metadata") or {},
        input_mp=fields.input_mp,
    )
    return request, [image for image in fields.images if isinstance(image, InputImage)]


def _image_slots(payload: Mapping[str, Any]) -> tuple[Loc, list[ImageSlot]]:
    """`images` (a list, base64 or URLs), else `image` (base64 or a URL), else `image_url` (a URL)."""
    images = payload.get("images")
    if images is not None:
        if not isinstance(images, list):
            return ("body", "images"), [ImageSlot(("body", "images"), images, problem=_NOT_A_LIST)]
        return ("body", "images"), [ImageSlot(("body", "images", n), value) for n, value in enumerate(images)]
    if payload.get("image") is not None:
        return ("body", "image"), [ImageSlot(("body", "image"), payload["image"])]
    if payload.get("image_url") is not None:
        return ("body", "image"), [ImageSlot(("body", "image_url"), payload["image_url"], url_only=True)]
    return ("body", "image"), []


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
    edit, images = await anyio.to_thread.run_sync(lambda: parse_edit_request(parse_json(body), svc.catalog))
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
    log.info("job.created", job_id=job.id, model=edit.model)
    handover(request).wake(Work.SUBMIT)
    return JSONResponse(job_view(stored), status_code=202, headers=headers)


async def _discard(svc: Services, inputs: tuple[StoredInput, ...]) -> None:
    """Remove input images no job refers to; should that fail, they are only unused objects."""
    with anyio.CancelScope(shield=True):
        try:
            await svc.blobs.delete([item.key for item in inputs])
        except (OSError, StorageUnavailable) as exc:
            log.warning("job.inputs_not_removed", keys=[item.key for item in inputs], error=str(exc))
