"""Serving the receiver with uvicorn, with a graceful stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from receiver.settings import Settings
from receiver.web.app import create_app
from receiver.web.protocol import HeaderDeadlineProtocol
from receiver.worker.scheduler import Scheduler


class ReceiverServer(uvicorn.Server):
    """uvicorn, with `/readyz` answering 503 from the moment a stop signal arrives.

    uvicorn then stops accepting connections, answers the requests in flight (webhooks included) within
    the grace period, and runs the app's shutdown, which lets claimed work finish and releases the rest.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        scheduler = getattr(self.app.state, "scheduler", None)
        if scheduler is not None:
            scheduler.ready = False
            if self.loop is not None:
                # Background work stops taking new jobs now, while the requests in flight are answered.
                # (In a task of the loop: `stop` reads the event loop's clock.)
                asyncio.run_coroutine_threadsafe(_stop(scheduler), self.loop)
        super().handle_exit(sig, frame)


async def _stop(scheduler: Scheduler) -> None:
    scheduler.stop()


def serve(settings: Settings, host: str, port: int, *, api: bool = True, workers: bool = True) -> None:
    """Serve until SIGTERM/SIGINT: the API, the background work, or both (see `create_app`)."""
    app = create_app(settings, api=api, workers=workers)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,  # uvicorn's lines go through our handler (see `configure_logging`)
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        lifespan="on",
        http=HeaderDeadlineProtocol,
    )
    ReceiverServer(config, app).run()
