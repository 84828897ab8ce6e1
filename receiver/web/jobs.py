"""`/v1/jobs`: inspect jobs, fetch their stored images (result and inputs), re-publish events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from receiver.blobs import image_key
from receiver.errors import Conflict, NotFound
from receiver.models import FINAL_STATES, Job, isotime
from receiver.web.common import handover, reachability, require_token, services
from receiver.web.conditional import none_match_fails
from receiver.web.ranges import RangeNotSatisfiable, byte_range
from receiver.web.schemas import ImageQuery, InputQuery, JobQuery, JobsQuery, validate
from receiver.web.thumbnails import CONTENT_TYPE as THUMBNAIL_TYPE
from receiver.web.thumbnails import ThumbnailCache
from receiver.web.views import job_view
from receiver.worker.handover import Work

WAIT_STEP_S = 0.25


async def get_job(request: Request) -> JSONResponse:
    """One job; with `?wait=N` the answer is held up to N seconds until the job has its outcome."""
    require_token(request)
    svc = services(request)
    query = validate(JobQuery, dict(request.query_params), "query")
    job = await _job(request)
    with anyio.move_on_after(query.wait):
        while job.state not in FINAL_STATES:
            await anyio.sleep(WAIT_STEP_S)
            job = await _job(request)
    return JSONResponse(job_view(job, await svc.store.deliveries(job.id)))


async def list_jobs(request: Request) -> JSONResponse:
    require_token(request)
    svc = services(request)
    query = validate(JobsQuery, dict(request.query_params), "query")
    jobs = await svc.store.list_jobs(
        state=query.state, dead_letter=query.delivery == "dead", limit=query.limit, offset=query.offset
    )
    deliveries = (
        await svc.store.deliveries_of([job.id for job in jobs]) if query.include == "deliveries" else {}
    )
    views = [job_view(job, deliveries.get(job.id)) for job in jobs]
    return JSONResponse({"jobs": views, "limit": query.limit, "offset": query.offset})


async def get_image(request: Request) -> Response:
    """The stored result; with `?width=N`, a thumbnail N pixels wide (WebP)."""
    require_token(request)
    width = validate(ImageQuery, dict(request.query_params), "query").width
    job = await _job(request)
    if job.image is None:
        raise NotFound(f"job {job.id} has no stored image (state {job.state.value})")
    image = job.image
    key = image_key(job.id, image.content_type)
    if width is not None:
        return await _thumbnail(request, key, image.sha256, width)
    return await _blob_response(request, key, image.content_type, image.bytes, image.sha256)


async def get_input(request: Request) -> Response:
    """An input image of the job: `?index=N` picks one of several (from 0, the default); with
    `?width=N`, a thumbnail N pixels wide (WebP)."""
    require_token(request)
    query = validate(InputQuery, dict(request.query_params), "query")
    job = await _job(request)
    if not job.inputs:
        raise NotFound(f"job {job.id} has no stored input image (it is older than stored URL inputs)")
    index = query.index
    if index >= len(job.inputs):
        raise NotFound(f"job {job.id} has {len(job.inputs)} input image(s); there is no index {index}")
    stored = job.inputs[index]
    if query.width is not None:
        return await _thumbnail(request, stored.key, stored.sha256, query.width)
    return await _blob_response(request, stored.key, stored.content_type, stored.bytes, stored.sha256)


async def overview(request: Request) -> JSONResponse:
    """Jobs per state, completion events in the last minute, dead letters, oldest undelivered per sink."""
    require_token(request)
    svc = services(request)
    now = svc.clock()
    seen = await svc.store.overview(now)
    return JSONResponse(
        {
            "jobs": seen.jobs_per_state,
            "events_per_minute": seen.events_last_minute,
            "dead_letters": seen.dead_letters,
            "oldest_undelivered": {
                sink: {"since": isotime(made), "age_s": round(max(0.0, now - made), 1)}
                for sink, made in sorted(seen.oldest_undelivered.items())
            },
            "sinks": await reachability(request).report(),
        }
    )


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


async def _blob_response(request: Request, key: str, content_type: str, size: int, sha256: str) -> Response:
    """The blob, or the one byte range the request asks for (206), streamed from the blob store; 304
    when the client's copy (If-None-Match) is the blob."""
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{sha256}"'}
    if none_match_fails(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
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


async def _thumbnail(request: Request, key: str, sha256: str, width: int) -> Response:
    """A WebP thumbnail of the blob, made once per sha256 and width; 304 when the client has it."""
    blobs = services(request).blobs

    async def load() -> bytes:
        return b"".join([chunk async for chunk in blobs.read(key)])

    headers = {"ETag": f'"{sha256}-{width}"', "Cache-Control": "private, max-age=86400"}
    if none_match_fails(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    thumbnails: ThumbnailCache = request.app.state.thumbnails
    return Response(
        await thumbnails.get(sha256, width, load),
        media_type=THUMBNAIL_TYPE,
        # A thumbnail is made whole: a Range asked of it is ignored (RFC 9110 allows that).
        headers=headers | {"Accept-Ranges": "none"},
    )


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
