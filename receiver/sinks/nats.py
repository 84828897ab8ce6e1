"""Events published to NATS JetStream with `Nats-Msg-Id` = the event id, so the stream drops a
redelivered copy inside its duplicate window; a delivery counts once the stream has acknowledged it.
Several due events are published together and their acknowledgements awaited at once.
`nats://[user:password@]host[:port]?subject=SUBJECT[&stream=NAME]`: with `stream`, a missing stream is
created to capture `subject`. The connection is made when first needed and reconnects by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

from receiver.errors import SinkError
from receiver.models import Event
from receiver.sinks.base import SinkBase, SinkOptions, event_json
from receiver.sinks.urls import SinkUrl, parse_sink_url

log = structlog.get_logger("receiver.sinks.nats")


class NatsSink(SinkBase):
    def __init__(self, url: SinkUrl, options: SinkOptions) -> None:
        self.name = url.name
        self.subject = url.params["subject"]
        self.stream = url.params.get("stream") or None
        self._url = url
        self._timeout = options.timeout_s
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting = anyio.Lock()

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> NatsSink:
        parsed = parse_sink_url(url, {"nats": 4222}, {"subject", "stream"}, {"subject"})
        return cls(parsed, options or SinkOptions())

    async def aclose(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        if nc.is_connected:  # a drain would wait for a server that is gone
            with anyio.move_on_after(self._timeout):
                await nc.drain()
        if not nc.is_closed:
            await nc.close()

    async def ping(self) -> None:
        nc = (await self._jetstream())[0]
        with anyio.fail_after(self._timeout):
            await nc.flush()

    async def publish(self, event: Event) -> None:
        js = (await self._jetstream())[1]
        try:
            await js.publish(self.subject, event_json(event), timeout=self._timeout, headers=_headers(event))
        except nats.errors.MaxPayloadError as exc:
            raise SinkError(f"event {event.id} is over the server's max_payload", retryable=False) from exc

    async def publish_batch(self, events: Sequence[Event]) -> list[Exception | None]:
        js = (await self._jetstream())[1]
        acks: list[asyncio.Future[PubAck] | Exception] = []
        for event in events:
            try:
                acks.append(await js.publish_async(self.subject, event_json(event), headers=_headers(event)))
            except Exception as exc:  # this event's outcome; the others are still sent
                acks.append(exc)
        pending = [ack for ack in acks if not isinstance(ack, Exception)]
        if pending:
            with anyio.move_on_after(self._timeout):
                await asyncio.wait(pending)
        return [_outcome(ack) for ack in acks]

    async def _jetstream(self) -> tuple[Client, JetStreamContext]:
        async with self._connecting:
            if self._nc is None or self._js is None or self._nc.is_closed:
                self._nc, self._js = await self._connect()
            return self._nc, self._js

    async def _connect(self) -> tuple[Client, JetStreamContext]:
        url = self._url

        async def on_error(exc: Exception) -> None:  # every failed reconnect comes here: not a warning
            log.debug("nats_sink.error", sink=self.name, error=f"{type(exc).__name__}: {exc}")

        async def on_disconnect() -> None:
            log.warning("nats_sink.disconnected", sink=self.name)

        async def on_reconnect() -> None:
            log.info("nats_sink.reconnected", sink=self.name)

        with anyio.fail_after(self._timeout):
            nc = await nats.connect(
                servers=[f"nats://{url.host}:{url.port}"],
                user=url.username,
                password=url.password,
                connect_timeout=self._timeout,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
        js = nc.jetstream(timeout=self._timeout)
        if self.stream is not None:
            try:
                await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(name=self.stream, subjects=[self.subject])
                log.info("nats_sink.stream_created", sink=self.name, stream=self.stream)
        return nc, js


def _headers(event: Event) -> dict[str, str]:
    return {"Nats-Msg-Id": event.id}


def _outcome(ack: asyncio.Future[PubAck] | Exception) -> Exception | None:
    if isinstance(ack, Exception):
        return ack
    if not ack.done():
        ack.cancel()
        return SinkError("no acknowledgement from JetStream in time", retryable=True)
    error = ack.exception()
    return error if error is None or isinstance(error, Exception) else SinkError(repr(error), retryable=True)
