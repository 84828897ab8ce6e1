"""Events published to a RabbitMQ exchange with publisher confirms: persistent, `message_id` = the
event id, `content_type` `application/cloudevents+json`, the CloudEvents attributes also as `ce-*`
headers, routing key = the event type unless `routing_key` is given. The exchange is used as it is
when it exists and declared durable `topic` when it does not. Messages are published mandatory: one no
queue is bound for is retried, not dropped. Several due events are published with their confirms in
flight together. `amqp://user:password@host[:port]/[vhost]?exchange=NAME[&routing_key=KEY]`, `amqps://`
for TLS. The connection is made when first needed and reconnects by itself (aio-pika's robust one)."""

from __future__ import annotations

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import anyio
import structlog

from receiver.errors import SinkError
from receiver.models import Event
from receiver.sinks.base import SinkBase, SinkOptions, event_json
from receiver.sinks.urls import SinkUrl, parse_sink_url

log = structlog.get_logger("receiver.sinks.amqp")

CONTENT_TYPE = "application/cloudevents+json"


class AmqpSink(SinkBase):
    def __init__(self, url: SinkUrl, options: SinkOptions) -> None:
        self.name = url.name
        self.exchange_name = url.params["exchange"]
        self.routing_key = url.params.get("routing_key") or None
        self._url = url
        self._timeout = options.timeout_s
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._connecting = anyio.Lock()

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> AmqpSink:
        parsed = parse_sink_url(url, {"amqp": 5672, "amqps": 5671}, {"exchange", "routing_key"}, {"exchange"})
        return cls(parsed, options or SinkOptions())

    async def aclose(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            await connection.close()

    async def ping(self) -> None:
        await self._open_exchange()

    async def publish(self, event: Event) -> None:
        exchange = await self._open_exchange()
        message = aio_pika.Message(
            event_json(event),
            content_type=CONTENT_TYPE,
            message_id=event.id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=ce_headers(event),
        )
        try:
            await exchange.publish(message, self.routing_key or event.type, timeout=self._timeout)
        except aiormq.exceptions.PublishError as exc:
            key = self.routing_key or event.type
            raise SinkError(
                f"no queue is bound to exchange {self.exchange_name!r} for {key!r}", retryable=True
            ) from exc
        except (aiormq.exceptions.ChannelNotFoundEntity, aiormq.exceptions.ChannelPreconditionFailed) as exc:
            self._exchange = None  # the broker closed the channel; the next publish opens another
            raise SinkError(f"{self.name} refused the event: {exc}", retryable=False) from exc
        except aiormq.exceptions.AMQPError:
            self._exchange = None
            raise

    async def _open_exchange(self) -> aio_pika.abc.AbstractExchange:
        async with self._connecting:
            if self._connection is None:
                self._connection = await self._connect()
            if self._exchange is None or self._channel is None or self._channel.is_closed:
                self._channel, self._exchange = await self._declare(self._connection)
            return self._exchange

    async def _connect(self) -> aio_pika.abc.AbstractRobustConnection:
        url = self._url
        return await aio_pika.connect_robust(
            host=url.host,
            port=url.port,
            login=url.username or "guest",
            password=url.password or "guest",
            virtualhost=url.path or "/",
            ssl=url.scheme == "amqps",
            timeout=self._timeout,
        )

    async def _declare(
        self, connection: aio_pika.abc.AbstractConnection
    ) -> tuple[aio_pika.abc.AbstractChannel, aio_pika.abc.AbstractExchange]:
        """The exchange as it exists (a passive declare, on a channel of its own: a miss closes it),
        or declared durable `topic`."""
        probe = await connection.channel()
        try:
            await probe.get_exchange(self.exchange_name, ensure=True)
            exists = True
        except aiormq.exceptions.ChannelNotFoundEntity:
            exists = False
        finally:
            if not probe.is_closed:
                await probe.close()
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        if exists:
            return channel, await channel.get_exchange(self.exchange_name, ensure=False)
        log.info("amqp_sink.exchange_declared", sink=self.name, exchange=self.exchange_name)
        exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        return channel, exchange


def ce_headers(event: Event) -> dict[str, aio_pika.abc.FieldValue]:
    """The CloudEvents attributes as `ce-*` headers (binary-mode names); the data stays in the body."""
    attributes = {k: v for k, v in event.to_dict().items() if k not in {"data", "datacontenttype"}}
    return {f"ce-{key}": str(value) for key, value in attributes.items()}
