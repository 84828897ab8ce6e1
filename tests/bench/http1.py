"""Just enough HTTP/1.1 for the load generator: pre-built keep-alive requests, and a connection that
sends one at a time and parses `Content-Length` responses as they arrive, with no per-request
coroutine (a callback when each response is complete)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import cast

_CONTENT_LENGTH = b"\r\ncontent-length:"


def build_request(host: str, port: int, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ProtocolError(Exception):
    pass


Done = Callable[["Connection", int, float], None]  # (connection, status, time the response completed)
Lost = Callable[["Connection", Exception | None], None]


class Connection(asyncio.Protocol):
    """One keep-alive connection; `send` a request, get `on_response` when its answer is complete."""

    def __init__(self, on_response: Done, on_lost: Lost) -> None:
        self.on_response = on_response
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.need = -1  # bytes of the current response still expected past the head; -1: head not seen
        self.status = 0
        self.busy = False
        self.sent_at = 0.0
        self.tag = -1  # what the driver is waiting for on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes, tag: int) -> None:
        assert self.transport is not None and not self.busy
        self.busy = True
        self.tag = tag
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if self.need < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[: end + 2].lower()
                self.status = int(head[9:12])
                at = head.find(_CONTENT_LENGTH)
                if at < 0:
                    self._fail(ProtocolError("response without Content-Length"))
                    return
                self.need = int(head[at + len(_CONTENT_LENGTH) : head.index(b"\r\n", at + 2)])
                self.buffer = self.buffer[end + 4 :]
            if len(self.buffer) < self.need:
                return
            self.buffer = self.buffer[self.need :]
            self.need = -1
            self.busy = False
            self.on_response(self, self.status, time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_lost(self, exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.buffer = b""


async def connect(host: str, port: int, on_response: Done, on_lost: Lost) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: Connection(on_response, on_lost), host, port)
    return protocol
