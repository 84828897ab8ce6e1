"""The baseline: a bare Starlette app with the receiver's webhook route, answering 200 at once.

Started exactly like the receiver (uvicorn, loopback, no access log, log level warning), so the
difference between the two is what the receiver does per webhook. It does not even read the body:
the baseline is the fastest a Starlette endpoint on this uvicorn can be.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


async def webhook(request: Request) -> Response:
    return JSONResponse({"status": "accepted"})


async def ready(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/webhooks/bfl/{job_id}", webhook, methods=["POST"]),
        Route("/readyz", ready, methods=["GET"]),
    ]
)
