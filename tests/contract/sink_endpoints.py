"""For each sink, a fresh place on its real server (a stream, subject, exchange, topic, endpoint) and
a reader that gets back what the sink put there, as the broker holds it."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode, urlsplit

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.sinks import SinkOptions
from receiver.sinks.memory import MemorySink
from tests.servers import serve

HTTP_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks spec's example secret


@dataclass(frozen=True)
class Received:
    body: bytes  # the structured-mode JSON, as the broker or endpoint got it
    meta: dict[str, str] = field(default_factory=dict)  # headers, message properties, stream fields


class Endpoint(Protocol):
    options: SinkOptions

    def url(self, port: int | None = None) -> str:
        """The sink URL for this place; with `port`, through that loopback port instead (a proxy)."""

    async def received(self) -> list[Received]:
        """Everything that arrived so far, oldest first."""


def with_query(base: str, port: int | None, **params: str) -> str:
    parts = urlsplit(base)
    netloc = parts.netloc if port is None else parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return parts._replace(netloc=netloc, query=urlencode(params)).geturl()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@dataclass
class MemoryEndpoint:
    name: str = field(default_factory=lambda: unique("contract-"))
    options: SinkOptions = field(default_factory=SinkOptions)

    def url(self, port: int | None = None) -> str:
        return f"memory://{self.name}"

    async def received(self) -> list[Received]:
        from receiver.sinks.base import event_json

        return [Received(event_json(event)) for event in MemorySink.published(self.name)]


@dataclass
class FileEndpoint:
    path: Path
    options: SinkOptions = field(default_factory=SinkOptions)

    def url(self, port: int | None = None) -> str:
        return f"file://{self.path}"

    async def received(self) -> list[Received]:
        if not self.path.exists():
            return []
        return [Received(line) for line in self.path.read_bytes().splitlines()]


@dataclass
class HttpEndpoint:
    base: str
    got: list[Received]
    options: SinkOptions = field(default_factory=lambda: SinkOptions(http_secret=HTTP_SECRET))

    def url(self, port: int | None = None) -> str:
        return with_query(self.base, port) + "/events"

    async def received(self) -> list[Received]:
        return list(self.got)


@asynccontextmanager
async def http_endpoint() -> AsyncIterator[HttpEndpoint]:
    got: list[Received] = []

    async def events(request: Request) -> Response:
        got.append(Received(await request.body(), dict(request.headers)))
        return Response(status_code=204)

    with serve(Starlette(routes=[Route("/events", events, methods=["POST"])])) as url:
        yield HttpEndpoint(url, got)


@dataclass
class RedisEndpoint:
    server: str
    stream: str = field(default_factory=lambda: unique("contract-"))
    options: SinkOptions = field(default_factory=SinkOptions)

    def url(self, port: int | None = None) -> str:
        return with_query(self.server, port, stream=self.stream)

    async def received(self) -> list[Received]:
        import redis.asyncio as aioredis

        async with aioredis.Redis.from_url(self.server) as client:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(self.stream)  # type: ignore[assignment]
        return [
            Received(fields[b"event"], {"id": fields[b"id"].decode(), "type": fields[b"type"].decode()})
            for _, fields in entries
        ]


@asynccontextmanager
async def redis_endpoint(server: str) -> AsyncIterator[RedisEndpoint]:
    import redis.asyncio as aioredis

    endpoint = RedisEndpoint(server)
    try:
        yield endpoint
    finally:
        async with aioredis.Redis.from_url(server) as client:
            await client.delete(endpoint.stream)


@dataclass
class NatsEndpoint:
    server: str
    subject: str = field(default_factory=lambda: unique("contract."))
    stream: str = field(default_factory=lambda: unique("CONTRACT_"))
    options: SinkOptions = field(default_factory=SinkOptions)

    def url(self, port: int | None = None) -> str:
        return with_query(self.server, port, subject=self.subject, stream=self.stream)

    async def received(self) -> list[Received]:
        import nats
        import nats.js.errors

        nc = await nats.connect(self.server)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                return []
            if not info.state.messages:  # a stream just made: no sequence to read yet
                return []
            found = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                message = await js.get_msg(self.stream, seq)
                found.append(Received(message.data or b"", dict(message.headers or {})))
            return found
        finally:
            await nc.close()


@asynccontextmanager
async def nats_endpoint(server: str) -> AsyncIterator[NatsEndpoint]:
    endpoint = NatsEndpoint(server)
    try:
        yield endpoint
    finally:
        await _delete_stream(server, endpoint.stream)


async def _delete_stream(server: str, stream: str) -> None:
    import nats
    import nats.js.errors

    nc = await nats.connect(server)
    try:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


@dataclass
class AmqpEndpoint:
    server: str
    queue: object  # aio_pika's queue bound to the exchange with "#"
    exchange: str
    got: list[Received] = field(default_factory=list)
    options: SinkOptions = field(default_factory=SinkOptions)

    def url(self, port: int | None = None) -> str:
        return with_query(self.server, port, exchange=self.exchange)

    async def received(self) -> list[Received]:
        import aio_pika.abc

        assert isinstance(self.queue, aio_pika.abc.AbstractQueue)
        while (message := await self.queue.get(no_ack=True, fail=False)) is not None:
            meta = {key: str(value) for key, value in message.headers.items()}
            meta |= {
                "message_id": str(message.message_id),
                "content_type": str(message.content_type),
                "delivery_mode": str(int(message.delivery_mode)),
                "routing_key": str(message.routing_key),
            }
            self.got.append(Received(message.body, meta))
        return list(self.got)


@asynccontextmanager
async def amqp_endpoint(server: str) -> AsyncIterator[AmqpEndpoint]:
    """An exchange the sink will declare, and a queue bound to it before anything is published."""
    import aio_pika

    name = unique("contract-")
    async with await aio_pika.connect(server) as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")
        try:
            yield AmqpEndpoint(server, queue, name)
        finally:
            await exchange.delete()


@dataclass
class MqttEndpoint:
    server: str
    client: object  # the subscribed aiomqtt client
    topic: str
    got: list[Received] = field(default_factory=list)
    options: SinkOptions = field(default_factory=SinkOptions)

    def url(self, port: int | None = None) -> str:
        return with_query(self.server, port, topic=self.topic)

    async def received(self) -> list[Received]:
        import aiomqtt

        assert isinstance(self.client, aiomqtt.Client)
        with anyio.move_on_after(0.1):  # what the broker has sent by now
            async for message in self.client.messages:
                payload = message.payload
                assert isinstance(payload, bytes)
                self.got.append(Received(payload, {"qos": str(message.qos)}))
        return list(self.got)


@asynccontextmanager
async def mqtt_endpoint(server: str) -> AsyncIterator[MqttEndpoint]:
    import aiomqtt

    parts = urlsplit(server)
    topic = unique("contract/")
    async with aiomqtt.Client(parts.hostname or "127.0.0.1", parts.port or 1883) as client:
        await client.subscribe(topic, qos=2)
        yield MqttEndpoint(server, client, topic)


def structured(received: Received) -> dict[str, object]:
    body: dict[str, object] = json.loads(received.body)
    return body
