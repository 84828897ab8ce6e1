"""uvicorn's HTTP protocol with a deadline on request headers.

uvicorn bounds the idle time between requests (keep-alive) and the body is bounded by the app
(RECEIVER_BODY_TIMEOUT_S), but a client that sends its request line and headers a byte at a time would
hold its connection forever. Here the headers of each request must be complete within
`header_timeout_s` of its first byte (or of the connection, for the first request), or the connection
is closed.
"""

from __future__ import annotations

import asyncio

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger("receiver.http")


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        log.warning("http.headers_too_slow", client=self.client, timeout_s=self.header_timeout_s)
        self.transport.close()
