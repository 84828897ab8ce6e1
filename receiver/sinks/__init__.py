"""Event sinks, chosen by each `RECEIVER_SINKS` URL's scheme; broker clients are optional extras."""

from __future__ import annotations

from collections.abc import Sequence

from receiver.errors import ConfigError
from receiver.registry import Registry
from receiver.settings import Settings
from receiver.sinks.base import Sink, SinkOptions, event_line
from receiver.sinks.signing import parse_secret

SINKS: Registry[Sink] = Registry(
    "sink",
    {
        "stdout": "receiver.sinks.stdout:StdoutSink",
        "file": "receiver.sinks.file:FileSink",
        "memory": "receiver.sinks.memory:MemorySink",
        "http": "receiver.sinks.http:HttpSink",
        "https": "receiver.sinks.http:HttpSink",
        "redis": "receiver.sinks.redis:RedisSink",
        "rediss": "receiver.sinks.redis:RedisSink",
        "nats": "receiver.sinks.nats:NatsSink",
        "amqp": "receiver.sinks.amqp:AmqpSink",
        "amqps": "receiver.sinks.amqp:AmqpSink",
        "mqtt": "receiver.sinks.mqtt:MqttSink",
        "mqtts": "receiver.sinks.mqtt:MqttSink",
    },
    extras={"rediss": "redis", "amqps": "amqp", "mqtts": "mqtt"},
)


def sink_from_url(url: str, options: SinkOptions | None = None) -> Sink:
    return SINKS.from_url(url, options or SinkOptions())


def sinks_from_urls(urls: Sequence[str], options: SinkOptions | None = None) -> list[Sink]:
    """Every sink, parsed (not connected); two URLs that name the same sink are one configuration error."""
    sinks = [sink_from_url(url, options) for url in urls]
    names = [sink.name for sink in sinks]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"RECEIVER_SINKS names the same sink more than once: {', '.join(twice)}")
    return sinks


def sinks_from_settings(settings: Settings) -> list[Sink]:
    if settings.http_sink_secret:
        parse_secret(settings.http_sink_secret)  # a bad secret stops start-up, HTTP sinks or not
    options = SinkOptions(http_secret=settings.http_sink_secret, timeout_s=settings.sink_timeout_s)
    return sinks_from_urls(settings.sinks, options)


__all__ = [
    "SINKS",
    "Sink",
    "SinkOptions",
    "event_line",
    "sink_from_url",
    "sinks_from_settings",
    "sinks_from_urls",
]
