"""Sink URLs: the grammar of each, and a clear start-up error naming the sink when one is malformed
or its client library is missing."""

from __future__ import annotations

import sys

import pytest

from receiver.errors import ConfigError, MissingDependency
from receiver.sinks import sink_from_url, sinks_from_urls
from receiver.sinks.amqp import AmqpSink
from receiver.sinks.mqtt import MqttSink
from receiver.sinks.nats import NatsSink
from receiver.sinks.redis import RedisSink


def test_redis_url() -> None:
    sink = sink_from_url("redis://user:s3cret@cache.internal:6380/2?stream=edits&maxlen=1000")
    assert isinstance(sink, RedisSink)
    assert (sink.stream, sink.maxlen) == ("edits", 1000)
    assert sink.name == "redis://***@cache.internal:6380/2?maxlen=1000&stream=edits"
    assert isinstance(sink_from_url("rediss://cache.internal?stream=edits"), RedisSink)
    assert sink_from_url("redis://127.0.0.1?stream=edits").maxlen is None  # type: ignore[attr-defined]


def test_nats_url() -> None:
    sink = sink_from_url("nats://127.0.0.1?subject=kontext.edits&stream=KONTEXT")
    assert isinstance(sink, NatsSink)
    assert (sink.subject, sink.stream) == ("kontext.edits", "KONTEXT")
    assert sink.name == "nats://127.0.0.1?stream=KONTEXT&subject=kontext.edits"


def test_amqp_url() -> None:
    sink = sink_from_url("amqp://guest:guest@127.0.0.1:5672/%2F?exchange=kontext&routing_key=edits.done")
    assert isinstance(sink, AmqpSink)
    assert (sink.exchange_name, sink.routing_key) == ("kontext", "edits.done")
    assert "guest" not in sink.name
    assert sink_from_url("amqps://u:p@mq.internal/prod?exchange=kontext").routing_key is None  # type: ignore[attr-defined]


def test_mqtt_url() -> None:
    sink = sink_from_url("mqtt://127.0.0.1?topic=kontext/edits")
    assert isinstance(sink, MqttSink)
    assert (sink.topic, sink.qos) == ("kontext/edits", 1)
    assert sink_from_url("mqtts://u:p@broker?topic=t&qos=2").qos == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/0", r"sink redis://127.0.0.1:6379/0: stream= is required"),
        ("redis://127.0.0.1?stream=", "stream= is required"),
        ("redis://127.0.0.1?stream=s&maxlen=ten", "maxlen='ten' must be a whole number"),
        ("redis://127.0.0.1/zero?stream=s", "the path must be a database number"),
        (
            "redis://127.0.0.1?stream=s&max_len=5",
            r"unknown query parameter 'max_len' \(expected: maxlen, stream\)",
        ),
        ("redis://127.0.0.1:99999?stream=s", "the port is not a number"),
        ("nats://127.0.0.1?stream=S", "subject= is required"),
        ("nats://127.0.0.1?subject=a&subject=b", "'subject' is given twice"),
        (
            "amqp://guest:guest@127.0.0.1/?routing_key=x",
            r"sink amqp://\*\*\*@127.0.0.1/\?\*\*\*: exchange= is required",
        ),
        ("mqtt://127.0.0.1?topic=t&qos=0", "qos='0' must be a whole number from 1 to 2"),
        ("mqtt://127.0.0.1?topic=t&retain=1", "unknown query parameter 'retain'"),
        ("mqtt://?topic=t", "names no host"),
        ("memory://", "expected memory://NAME"),
    ],
)
def test_a_malformed_url_is_a_config_error_naming_the_sink(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sink_from_url(url)


def test_an_error_never_shows_credentials() -> None:
    with pytest.raises(ConfigError) as error:
        sink_from_url("amqp://admin:hunter2@127.0.0.1/?exchange=x&bogus=1")
    assert "hunter2" not in str(error.value)


def test_the_same_sink_twice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="more than once"):
        sinks_from_urls(["redis://127.0.0.1?stream=a", "redis://127.0.0.1?stream=a"])
    assert len(sinks_from_urls(["redis://127.0.0.1?stream=a", "redis://127.0.0.1?stream=b"])) == 2


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("redis://127.0.0.1?stream=s", "redis", "redis"),
        ("rediss://127.0.0.1?stream=s", "redis", "redis"),
        ("nats://127.0.0.1?subject=s", "nats", "nats"),
        ("amqps://u:p@127.0.0.1/?exchange=x", "aio_pika", "amqp"),
        ("mqtt://127.0.0.1?topic=t", "aiomqtt", "mqtt"),
    ],
)
def test_a_missing_client_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it fails
    for loaded in [name for name in sys.modules if name.startswith("receiver.sinks.")]:
        if loaded.rsplit(".", 1)[1] in {"redis", "nats", "amqp", "mqtt"}:
            monkeypatch.delitem(sys.modules, loaded)
    with pytest.raises(MissingDependency, match=rf"pip install 'kontext-receiver\[{extra}\]'"):
        sink_from_url(url)
