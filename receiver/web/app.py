"""`create_app`: the Starlette app, with every resource opened once in its lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from receiver.blobs import BlobStore
from receiver.catalog import CATALOG, Catalog
from receiver.errors import ReceiverError
from receiver.services import Clock, open_services
from receiver.settings import Settings
from receiver.sinks import Sink, sinks_from_settings
from receiver.sinks.reachability import Reachability
from receiver.stores import Store
from receiver.web import dashboard, edits, events, health, jobs, session, webhooks
from receiver.web.common import on_client_disconnect, on_http_error, on_receiver_error, on_unexpected_error
from receiver.web.limits import RequestLimits, Slots
from receiver.web.openapi import OPENAPI, build_openapi
from receiver.web.schemas import EDIT_BODIES, EditBodies
from receiver.web.thumbnails import ThumbnailCache
from receiver.worker.handover import Work
from receiver.worker.runner import running_workers
from receiver.worker.scheduler import Scheduler

log = structlog.get_logger("receiver.app")

API_ROUTES = [
    Route("/v1/edits", edits.create_edit, methods=["POST"]),
    Route("/v1/jobs", jobs.list_jobs, methods=["GET"]),
    Route("/v1/jobs/{job_id}", jobs.get_job, methods=["GET"]),
    Route("/v1/jobs/{job_id}/image", jobs.get_image, methods=["GET"]),
    Route("/v1/jobs/{job_id}/input", jobs.get_input, methods=["GET"]),
    Route("/v1/jobs/{job_id}/redeliver", jobs.redeliver, methods=["POST"]),
    Route("/v1/events", events.stream_events, methods=["GET"]),
    Route("/v1/overview", jobs.overview, methods=["GET"]),
    Route("/webhooks/bfl/{job_id}", webhooks.bfl_webhook, methods=["POST"]),
    Route("/openapi.json", health.openapi, methods=["GET"]),
    *dashboard.ROUTES,
]
# What every process answers, the worker alone included.
HEALTH_ROUTES = [
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/metrics", health.metrics, methods=["GET"]),
]


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    blobs: BlobStore | None = None,
    sinks: list[Sink] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock = time.time,
    workers: bool = True,
    catalog: Catalog = CATALOG,
    api: bool = True,
    forward_wakeups: Callable[[tuple[Work, ...]], None] | None = None,
) -> Starlette:
    """The receiver app. Resources not given are built from `settings`. `workers=False` serves HTTP
    only: the background work runs in other processes sharing the store (`kontext-receiver worker`, or
    the worker processes of a multi-process `serve`, which `forward_wakeups` tells there is work).
    `api=False` runs the background work with only `/healthz`, `/readyz` and `/metrics` to answer."""
    if not (workers or api):
        raise ValueError("a receiver serves the API, runs the background work, or both")
    for warning in settings.check(api=api, workers=workers).warnings():
        log.warning("settings.doubtful", problem=warning)
    sinks = sinks if sinks is not None else sinks_from_settings(settings)  # a bad sink URL stops us here

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(
            settings, store=store, blobs=blobs, sinks=sinks, transport=transport, clock=clock, catalog=catalog
        ) as svc:
            scheduler = Scheduler.for_services(svc, downloads=workers)
            scheduler.forward = forward_wakeups
            app.state.services, app.state.scheduler = svc, scheduler
            app.state.streams = Slots(
                settings.max_streams,
                f"this receiver already serves {settings.max_streams} event streams (RECEIVER_MAX_STREAMS)",
            )
            app.state.thumbnails = ThumbnailCache()
            app.state.reachability = Reachability(svc.sinks)
            if workers:
                async with running_workers(svc, scheduler):
                    yield
            else:
                yield

    app = Starlette(
        routes=(API_ROUTES if api else []) + HEALTH_ROUTES,
        lifespan=lifespan,
        exception_handlers={
            ReceiverError: on_receiver_error,
            HTTPException: on_http_error,
            ClientDisconnect: on_client_disconnect,
            Exception: on_unexpected_error,
        },
    )
    # What edits are validated with, and the API description made from it: one body class per model.
    bodies = EDIT_BODIES if catalog is CATALOG else EditBodies(catalog)
    app.state.edit_bodies = bodies
    app.state.openapi = OPENAPI if bodies is EDIT_BODIES else build_openapi(bodies)
    app.state.sessions = session.Sessions(settings)
    app.state.limits = RequestLimits(settings.max_uploads, settings.max_queued, settings.body_timeout_s)
    return app
