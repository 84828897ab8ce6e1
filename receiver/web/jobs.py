"""`/v1/jobs`: inspect jobs, fetch stored images, re-publish events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from receiver.blobs import image_key
from receiver.errors import Conflict, NotFound
from receiver.models import FINAL_STATES, Job
from receiver.web.common import require_token, runtime
from receiver.web.schemas import JobQuery, JobsQuery, validate
from receiver.web.views import job_view

WAIT_STEP_S = 0.25


async def get_job(request: Request) -> JSONResponse:
    """One job; with `?wait=N` the answer is held up to N seconds until the job has its outcome."""
    require_token(request)
    rt = runtime(request)
    query = validate(JobQuery, dict(request.query_params), "query")
    job = await _job(request)
    with anyio.move_on_after(query.wait):
        while job.state not in FINAL_STATES:
            await anyio.sleep(WAIT_STEP_S)
            job = await _job(request)
    return JSONResponse(job_view(job, await rt.store.deliveries(job.id)))


async def list_jobs(request: Request) -> JSONResponse:
    require_token(request)
    rt = runtime(request)
    query = validate(JobsQuery, dict(request.query_params), "query")
    jobs = await rt.store.list_jobs(
        state=query.state, dead_letter=query.delivery == "dead", limit=query.limit, offset=query.offset
    )
    return JSONResponse(
        {"jobs": [job_view(job) for job in jobs], "limit": query.limit, "offset": query.offset}
    )


async def get_image(request: Request) -> StreamingResponse:
    require_token(request)
    rt = runtime(request)
    job = await _job(request)
    if job.image is None:
        raise NotFound(f"job {job.id} has no stored image (state {job.state.value})")
    chunks = rt.blobs.read(image_key(job.id, job.image.content_type))
    first = await anext(chunks)  # raises NotFound before the response starts
    return StreamingResponse(
        _prepend(first, chunks),
        media_type=job.image.content_type,
        headers={"Content-Length": str(job.image.bytes), "ETag": f'"{job.image.sha256}"'},
    )


async def redeliver(request: Request) -> JSONResponse:
    require_token(request)
    rt = runtime(request)
    job = await _job(request)
    count = await rt.store.redeliver(job.id, list(rt.sinks), rt.clock())
    if count == 0:
        raise Conflict(f"job {job.id} has no event yet (state {job.state.value})")
    rt.wakeups.publish.set()
    return JSONResponse({"id": job.id, "redelivered_to": sorted(rt.sinks)}, status_code=202)


async def _job(request: Request) -> Job:
    job_id = request.path_params["job_id"]
    job = await runtime(request).store.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
