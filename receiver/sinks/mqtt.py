"""Events published to an MQTT topic at QoS 1 (or `qos=2`), each publish waiting for the broker's
acknowledgement (PUBACK, or PUBCOMP at QoS 2). `mqtt://[user:password@]host[:port]?topic=TOPIC[&qos=1]`,
`mqtts://` for TLS. The connection is made when first needed and made again after it drops."""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

import aiomqtt
import anyio
import structlog

from receiver.models import Event
from receiver.sinks.base import SinkBase, SinkOptions, event_json
from receiver.sinks.urls import SinkUrl, parse_sink_url

log = structlog.get_logger("receiver.sinks.mqtt")


class MqttSink(SinkBase):
    def __init__(self, url: SinkUrl, options: SinkOptions) -> None:
        self.name = url.name
        self.topic = url.params["topic"]
        self.qos = url.integer("qos", 1, 1, 2)
        self._url = url
        self._timeout = options.timeout_s
        self._client: aiomqtt.Client | None = None
        self._connecting = anyio.Lock()

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> MqttSink:
        parsed = parse_sink_url(url, {"mqtt": 1883, "mqtts": 8883}, {"topic", "qos"}, {"topic"})
        return cls(parsed, options or SinkOptions())

    async def aclose(self) -> None:
        await self._drop()

    async def ping(self) -> None:
        await self._connected()

    async def publish(self, event: Event) -> None:
        client = await self._connected()
        try:
            await client.publish(self.topic, event_json(event), qos=self.qos, timeout=self._timeout)
        except aiomqtt.MqttError:
            await self._drop()  # the next publish connects again
            raise

    async def _connected(self) -> aiomqtt.Client:
        async with self._connecting:
            if self._client is not None and _disconnected(self._client):
                await self._drop()
            if self._client is None:
                url = self._url
                client = _Client(
                    url.host,
                    url.port,
                    username=url.username,
                    password=url.password,
                    tls_context=ssl.create_default_context() if url.scheme == "mqtts" else None,
                    timeout=self._timeout,
                )
                await client.__aenter__()
                self._client = client
            return self._client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError as exc:  # already disconnected
                log.debug("mqtt_sink.disconnect_failed", sink=self.name, error=str(exc))
            _disconnected(client)


class _Client(aiomqtt.Client):
    """aiomqtt's client, minus a race: when the broker goes away while a publish is being written,
    aiomqtt asks the event loop to watch the socket after paho has closed it, which fails in a loop
    callback. Here the socket is watched only while it is still open."""

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def callback() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # a broken connection: aiomqtt's own handling
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)

        def watch() -> None:
            if sock.fileno() > -1:
                with contextlib.suppress(OSError, ValueError, KeyError):
                    self._loop.add_writer(sock.fileno(), callback)

        self._loop.call_soon_threadsafe(watch)

    def _on_socket_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if sock.fileno() > -1:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._loop.remove_writer(sock.fileno())


def _disconnected(client: aiomqtt.Client) -> bool:
    """The broker went away: publishing on the dead socket would fail inside aiomqtt's callbacks, so
    a new client connects instead. aiomqtt has no public flag for this. The reason is read here, so
    asyncio does not report it as never retrieved."""
    gone = client._disconnected
    if gone.done() and not gone.cancelled():
        gone.exception()
    return gone.done()
