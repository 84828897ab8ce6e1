"""A server that answers every request with the same canned 200, on raw asyncio (uvloop) protocols.

It does almost nothing per request, so the load generator's rate against it is the generator's own
ceiling: the harness reports it beside the baselines to show the generator is not what is measured.
`python -m tests.bench.canned PORT`.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop

RESPONSE = (
    b'HTTP/1.1 200 OK\r\ncontent-length: 22\r\ncontent-type: application/json\r\n\r\n{"status":"accepted"}\n'
)


class CannedProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length :]
            answers += 1
        if answers and self.transport is not None:
            self.transport.write(RESPONSE * answers)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CannedProtocol, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
