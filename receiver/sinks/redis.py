"""Events appended to a Redis stream: `XADD` with fields `id`, `type` and `event` (the structured-mode
JSON), trimmed approximately (`MAXLEN ~ N`) when `maxlen` is given. Several due events go in one
pipelined round trip. `redis://[user:password@]host[:port][/db]?stream=NAME[&maxlen=N]`, `rediss://`
for TLS. The client reconnects by itself after a server restart."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.typing import EncodableT, FieldT

from receiver.errors import ConfigError
from receiver.models import Event
from receiver.sinks.base import SinkBase, SinkOptions, event_json
from receiver.sinks.urls import SinkUrl, parse_sink_url


class RedisSink(SinkBase):
    def __init__(self, url: SinkUrl, options: SinkOptions) -> None:
        self.name = url.name
        self.stream = url.params["stream"]
        self.maxlen = url.integer("maxlen", 0, 1) or None
        if url.path and not url.path.isdigit():
            raise ConfigError(f"sink {url.name}: the path must be a database number, like /0")
        self._url = url
        self._timeout = options.timeout_s
        self._client: aioredis.Redis | None = None

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> RedisSink:
        parsed = parse_sink_url(url, {"redis": 6379, "rediss": 6379}, {"stream", "maxlen"}, {"stream"})
        return cls(parsed, options or SinkOptions())

    async def open(self) -> None:
        url = self._url
        self._client = aioredis.Redis(
            host=url.host,
            port=url.port,
            db=int(url.path or 0),
            username=url.username,
            password=url.password,
            ssl=url.scheme == "rediss",
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),  # the outbox retries, with backoff of its own
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _open_client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("sink is not open; use `async with`")
        return self._client

    async def ping(self) -> None:
        await self._open_client().ping()

    async def publish(self, event: Event) -> None:
        await self._open_client().xadd(self.stream, _fields(event), maxlen=self.maxlen, approximate=True)

    async def publish_batch(self, events: Sequence[Event]) -> list[Exception | None]:
        async with self._open_client().pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(self.stream, _fields(event), maxlen=self.maxlen, approximate=True)
            results = await pipe.execute(raise_on_error=False)
        return [result if isinstance(result, Exception) else None for result in results]


def _fields(event: Event) -> dict[FieldT, EncodableT]:
    return {"id": event.id, "type": event.type, "event": event_json(event)}
