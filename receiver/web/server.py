"""Serving the receiver with uvicorn, with a graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.errors import ReceiverError
from receiver.settings import Settings
from receiver.web.app import create_app
from receiver.web.protocol import HeaderDeadlineProtocol
from receiver.worker.scheduler import Scheduler


class ReceiverServer(uvicorn.Server):
    """uvicorn, with `/readyz` answering 503 from the moment a stop signal arrives.

    uvicorn then stops accepting connections, answers the requests in flight (webhooks included) within
    the grace period, and runs the app's shutdown, which lets claimed work finish and releases the rest.
    A start-up that fails on one of our errors (the store unreachable, a malformed URL) raises it from
    `serve`, for the command to report in one line, instead of uvicorn logging the app's traceback.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        self.failure = StartupFailure(app)
        config.app = self.failure
        super().__init__(config)
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:  # uvicorn's way out of a failed start-up
            if self.failure.error is not None:
                raise self.failure.error from None
            raise

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        scheduler = getattr(self.app.state, "scheduler", None)
        if scheduler is not None:
            scheduler.ready = False
            if self.loop is not None:
                # Background work stops taking new jobs now, while the requests in flight are answered.
                # (In a task of the loop: `stop` reads the event loop's clock.)
                asyncio.run_coroutine_threadsafe(_stop(scheduler), self.loop)
        super().handle_exit(sig, frame)


class StartupFailure:
    """The app as uvicorn runs it: one of our errors failing the lifespan's start-up is kept in `error`,
    and uvicorn told of the failure without the traceback it would log. Anything else is passed on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.error: ReceiverError | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)  # sent once the exception is known
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_failure)
        except ReceiverError as exc:
            if not held:
                raise
            self.error = exc
            await send({"type": "lifespan.startup.failed", "message": ""})
        except BaseException:
            for message in held:
                await send(message)
            raise


async def _stop(scheduler: Scheduler) -> None:
    scheduler.stop()


def server(settings: Settings, app: Starlette, **options: Any) -> ReceiverServer:
    config = uvicorn.Config(
        app,
        access_log=False,
        log_config=None,  # uvicorn's lines go through our handler (see `configure_logging`)
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        lifespan="on",
        http=HeaderDeadlineProtocol,
        **options,
    )
    return ReceiverServer(config, app)


def serve(settings: Settings, host: str, port: int, *, api: bool = True, workers: bool = True) -> None:
    """Serve in this one process until SIGTERM/SIGINT: the API, the background work, or both (see
    `create_app`; `receiver.processes` runs several processes)."""
    server(settings, create_app(settings, api=api, workers=workers), host=host, port=port).run()
