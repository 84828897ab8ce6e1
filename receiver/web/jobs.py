"""`/v1/jobs`: inspect jobs, fetch their stored images (result and inputs), re-publish events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from receiver.blobs import image_key
from receiver.errors import Conflict, InvalidRequest, NotFound, Problem
from receiver.models import FINAL_STATES, Job, JobState
from receiver.web.common import handover, require_token, services
from receiver.web.ranges import RangeNotSatisfiable, byte_range
from receiver.web.views import job_view
from receiver.worker.handover import Work

MAX_WAIT_S = 60.0
WAIT_STEP_S = 0.25


async def get_job(request: Request) -> JSONResponse:
    """One job; with `?wait=N` the answer is held up to N seconds until the job has its outcome."""
    require_token(request)
    svc = services(request)
    wait = _number(request, "wait", 0.0, 0.0, MAX_WAIT_S)
    job = await _job(request)
    with anyio.move_on_after(wait):
        while job.state not in FINAL_STATES:
            await anyio.sleep(WAIT_STEP_S)
            job = await _job(request)
    return JSONResponse(job_view(job, await svc.store.deliveries(job.id)))


async def list_jobs(request: Request) -> JSONResponse:
    require_token(request)
    svc = services(request)
    state_name = request.query_params.get("state")
    if state_name is not None and state_name not in {s.value for s in JobState}:
        raise InvalidRequest([Problem(("query", "state"), f"unknown state {state_name!r}", "enum")])
    delivery = request.query_params.get("delivery")
    if delivery not in {None, "dead"}:
        raise InvalidRequest([Problem(("query", "delivery"), "only delivery=dead is supported", "enum")])
    limit = int(_number(request, "limit", 50, 1, 500))
    offset = int(_number(request, "offset", 0, 0, 10**9))
    jobs = await svc.store.list_jobs(
        state=JobState(state_name) if state_name else None,
        dead_letter=delivery == "dead",
        limit=limit,
        offset=offset,
    )
    return JSONResponse({"jobs": [job_view(job) for job in jobs], "limit": limit, "offset": offset})


async def get_image(request: Request) -> Response:
    require_token(request)
    job = await _job(request)
    if job.image is None:
        raise NotFound(f"job {job.id} has no stored image (state {job.state.value})")
    image = job.image
    key = image_key(job.id, image.content_type)
    return await _blob_response(request, key, image.content_type, image.bytes, image.sha256)


async def get_input(request: Request) -> Response:
    """An input image of the job: `?index=N` picks one of several (from 0, the default)."""
    require_token(request)
    job = await _job(request)
    if not job.inputs:
        raise NotFound(f"job {job.id} has no stored input image (it was given by URL, or is older)")
    index = int(_number(request, "index", 0, 0, len(job.inputs) - 1))
    stored = job.inputs[index]
    return await _blob_response(request, stored.key, stored.content_type, stored.bytes, stored.sha256)


async def redeliver(request: Request) -> JSONResponse:
    require_token(request)
    svc = services(request)
    job = await _job(request)
    count = await svc.store.redeliver(job.id, list(svc.sinks), svc.clock())
    if count == 0:
        raise Conflict(f"job {job.id} has no event yet (state {job.state.value})")
    handover(request).wake(Work.PUBLISH)
    return JSONResponse({"id": job.id, "redelivered_to": sorted(svc.sinks)}, status_code=202)


async def _job(request: Request) -> Job:
    job_id = request.path_params["job_id"]
    job = await services(request).store.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise InvalidRequest(
            [Problem(("query", name), f"must be a number from {low:g} to {high:g}", "range")]
        )
    return value


async def _blob_response(request: Request, key: str, content_type: str, size: int, sha256: str) -> Response:
    """The blob, or the one byte range the request asks for (206), streamed from the blob store."""
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{sha256}"'}
    try:
        wanted = byte_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        return Response(status_code=416, headers=headers | {"Content-Range": f"bytes */{size}"})
    start, end = wanted or (0, size)
    chunks = services(request).blobs.read(key, start, end if wanted else None)
    first = await anext(chunks, b"")  # raises NotFound before the response starts
    headers["Content-Length"] = str(end - start)
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(
        _prepend(first, chunks), status_code=206 if wanted else 200, media_type=content_type, headers=headers
    )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
