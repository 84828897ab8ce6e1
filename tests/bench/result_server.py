"""Sample images served the way BFL's delivery hosts (Azure blob storage) serve them: a GET of a
signed URL answered 200 with `Content-Type` and `Content-Length`; the query string is not checked.

`python -m uvicorn --factory tests.bench.result_server:create_app` with `BENCH_SAMPLES_DIR` set. The
files are read once at start; large ones are streamed in chunks so 50 downloads at once do not pile
up whole copies in this process.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
STREAM_ABOVE = 4 * 1024 * 1024
CHUNK = 256 * 1024


def create_app(directory: Path | None = None) -> Starlette:
    root = directory or Path(os.environ["BENCH_SAMPLES_DIR"])
    files = {path.name: path.read_bytes() for path in root.iterdir() if path.suffix in CONTENT_TYPES}

    async def sample(request: Request) -> Response:
        name = request.path_params["name"]
        data = files.get(name)
        if data is None:
            return PlainTextResponse("The specified blob does not exist.", status_code=404)
        headers = {"x-ms-blob-type": "BlockBlob", "accept-ranges": "bytes"}
        media_type = CONTENT_TYPES[Path(name).suffix]
        if len(data) <= STREAM_ABOVE:
            return Response(data, media_type=media_type, headers=headers)
        headers["content-length"] = str(len(data))
        return StreamingResponse(_chunks(data), media_type=media_type, headers=headers)

    async def ready(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/samples/{name}", sample, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
        ]
    )


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        yield bytes(view[start : start + CHUNK])
