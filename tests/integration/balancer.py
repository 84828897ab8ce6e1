"""A stand-in for a Kubernetes Service in front of several web processes: each request goes to the next
backend in turn, and to the one after it when that one refuses the connection (it was killed)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def balancer(backends: Sequence[str]) -> Starlette:
    turns = itertools.count()
    clients: list[httpx.AsyncClient] = []

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        first = next(turns)
        for offset in range(len(backends)):
            backend = backends[(first + offset) % len(backends)]
            try:
                answer = await clients[0].request(
                    request.method,
                    backend + request.url.path,
                    params=request.query_params,
                    content=body,
                    headers=headers,
                )
            except httpx.ConnectError:
                continue
            except httpx.TransportError:  # the backend died while answering: a proxy says 502
                return Response(status_code=502)
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return Response(answer.content, answer.status_code, headers=kept)
        return Response(status_code=503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=60) as client:
            clients.append(client)
            yield

    methods = ["GET", "POST", "PUT", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)
