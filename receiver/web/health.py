"""Liveness, readiness, metrics and the API description."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.metrics import CONTENT_TYPE
from receiver.models import JobState
from receiver.web.common import handover, reachability, services


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """503 while shutting down or when the store cannot be reached, so traffic goes elsewhere. Each
    sink's reachability is reported by name, but a sink that is down or slow never makes this a 503:
    webhooks are still acknowledged and kept, and the outbox delivers once the sink is back."""
    if not handover(request).ready:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    svc = services(request)
    try:
        await svc.store.count({JobState.CREATED})
    except Exception as exc:  # any store failure means "not ready", never a 500
        return JSONResponse({"status": "store unavailable", "error": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ready", "sinks": await reachability(request).report()})


async def metrics(request: Request) -> Response:
    svc = services(request)
    body = await svc.metrics.render(svc.store, list(svc.sinks), svc.clock())
    return Response(body, media_type=CONTENT_TYPE)


async def openapi(request: Request) -> JSONResponse:
    description: dict[str, Any] = request.app.state.openapi
    return JSONResponse(description)
