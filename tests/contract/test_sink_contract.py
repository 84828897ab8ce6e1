"""One contract for every sink, run against the real servers on loopback: what a sink publishes is
read back from the broker (or endpoint, or file) and parsed with the CloudEvents SDK; a redelivered
event keeps its id; an unreachable server fails retryably; a dropped connection is made again."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import anyio
import pytest
import structlog
from cloudevents.core.bindings.rabbitmq import RabbitMQMessage, from_rabbitmq
from cloudevents.core.formats.json import JSONFormat
from standardwebhooks.webhooks import Webhook

from receiver.errors import SinkError
from receiver.models import Event
from receiver.outbox.failures import as_sink_error
from receiver.sinks import Sink, SinkOptions, sink_from_url
from tests.contract import sink_endpoints as ep
from tests.contract.sink_endpoints import Endpoint, Received
from tests.proxy import tcp_proxy
from tests.servers import free_port
from tests.services import amqp_url, mqtt_url, nats_url, redis_url

DEADLINE_S = 10.0


def make_event(n: int = 1, **changes: Any) -> Event:
    event = Event(
        id=f"job-{n:04d}",
        source="http://127.0.0.1:8080",
        type="kontext.edit.completed",
        subject=f"job-{n:04d}",
        time="2026-12-01T07:00:00.123Z",
        dataref=f"file://data/images/job-{n:04d}.jpeg",
        data={"job_id": f"job-{n:04d}", "outcome": "completed", "prompt": "Change the car color to red ✓"},
    )
    return dataclasses.replace(event, **changes)


async def until(probe: Callable[[], Awaitable[list[Received]]], count: int) -> list[Received]:
    """What `probe` finds once it holds at least `count` items; fails after `DEADLINE_S`."""
    with anyio.fail_after(DEADLINE_S):
        while True:
            found = await probe()
            if len(found) >= count:
                return found
            await anyio.sleep(0.02)


async def outcome(action: Awaitable[None]) -> SinkError | None:
    """None when `action` succeeds, else what the outbox makes of its exception."""
    try:
        await action
    except Exception as exc:
        return as_sink_error(exc)
    return None


def assert_is(received: Received, event: Event) -> None:
    """The received body is the published event, and the CloudEvents SDK reads it as such."""
    parsed = JSONFormat().read(None, received.body)
    assert parsed.get_id() == event.id
    assert parsed.get_source() == event.source
    assert parsed.get_type() == event.type
    assert parsed.get_subject() == event.subject
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_time() == datetime.fromisoformat(event.time)
    assert parsed.get_datacontenttype() == "application/json"
    assert parsed.get_extension("dataref") == event.dataref
    assert parsed.get_data() == event.data
    assert ep.structured(received) == event.to_dict()


class SinkContract:
    """Subclassed per sink; a subclass provides the `endpoint` fixture."""

    deduplicates: ClassVar[bool] = False  # does the server drop a second copy of an event id?

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def sink(self, endpoint: Endpoint) -> AsyncIterator[Sink]:
        async with sink_from_url(endpoint.url(), endpoint.options) as opened:
            yield opened

    @pytest.mark.anyio
    async def test_an_event_arrives_as_the_same_cloudevent(self, sink: Sink, endpoint: Endpoint) -> None:
        event = make_event()
        await sink.publish(event)
        [received] = await until(endpoint.received, 1)
        assert_is(received, event)

    @pytest.mark.anyio
    async def test_a_batch_arrives_whole(self, sink: Sink, endpoint: Endpoint) -> None:
        events = [make_event(n) for n in range(1, 8)]
        assert await sink.publish_batch(events) == [None] * len(events)
        received = await until(endpoint.received, len(events))
        by_id = {ep.structured(r)["id"]: r for r in received}
        assert len(received) == len(events) and set(by_id) == {e.id for e in events}
        for event in events:
            assert_is(by_id[event.id], event)

    @pytest.mark.anyio
    async def test_a_redelivered_event_keeps_its_id(self, sink: Sink, endpoint: Endpoint) -> None:
        event, later = make_event(1), make_event(2)
        await sink.publish(event)
        await sink.publish(event)
        await sink.publish(later)  # once this is there, so is any second copy of the first
        received = await until(endpoint.received, 2 if self.deduplicates else 3)
        ids = [str(ep.structured(r)["id"]) for r in received]
        assert sorted(ids) == ([event.id] if self.deduplicates else [event.id, event.id]) + [later.id]

    @pytest.mark.anyio
    async def test_ping_reaches_the_server(self, sink: Sink) -> None:
        await sink.ping()


class NetworkSinkContract(SinkContract):
    """Sinks with a server: reaching it can fail, and a lost connection is made again. A subclass
    names its server's endpoint with `open_endpoint`."""

    def open_endpoint(self) -> AbstractAsyncContextManager[Endpoint]:
        raise NotImplementedError

    @pytest.fixture
    async def endpoint(self) -> AsyncIterator[Endpoint]:
        async with self.open_endpoint() as endpoint:
            yield endpoint

    @pytest.mark.anyio
    async def test_an_unreachable_server_fails_retryably(self, endpoint: Endpoint) -> None:
        closed = free_port()  # nothing listens there
        async with sink_from_url(
            endpoint.url(closed), dataclasses.replace(endpoint.options, timeout_s=2)
        ) as sink:
            with anyio.fail_after(DEADLINE_S):
                failures = [await outcome(sink.ping()), await outcome(sink.publish(make_event()))]
        assert all(failure is not None and failure.retryable for failure in failures), failures

    @pytest.mark.anyio
    async def test_a_dropped_connection_is_made_again(self, endpoint: Endpoint) -> None:
        server = urlsplit(endpoint.url())
        with tcp_proxy(server.hostname or "127.0.0.1", server.port or 0) as proxy:
            options = dataclasses.replace(endpoint.options, timeout_s=2)
            async with sink_from_url(endpoint.url(proxy.port), options) as sink:
                await sink.publish(make_event(1))
                proxy.down()  # as a broker restart: every connection cut, none taken for a while
                failure = await outcome(sink.publish(make_event(2)))
                assert failure is not None and failure.retryable
                proxy.up()
                with anyio.fail_after(DEADLINE_S * 2):
                    while failure is not None:  # as the outbox does: again until the sink takes it
                        assert failure.retryable, failure
                        await anyio.sleep(0.1)
                        failure = await outcome(sink.publish(make_event(2)))
        received = await until(endpoint.received, 2)
        assert {ep.structured(r)["id"] for r in received} == {"job-0001", "job-0002"}


class TestMemorySink(SinkContract):
    @pytest.fixture
    def endpoint(self) -> Endpoint:
        return ep.MemoryEndpoint()


class TestFileSink(SinkContract):
    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> Endpoint:
        return ep.FileEndpoint(tmp_path / "events.jsonl")


class TestHttpSink(NetworkSinkContract):
    def open_endpoint(self) -> AbstractAsyncContextManager[Endpoint]:
        return ep.http_endpoint()

    @pytest.mark.anyio
    async def test_deliveries_are_signed_per_standard_webhooks(self, sink: Sink, endpoint: Endpoint) -> None:
        event = make_event()
        await sink.publish(event)
        [received] = await until(endpoint.received, 1)
        assert received.meta["content-type"] == "application/cloudevents+json; charset=utf-8"
        assert received.meta["webhook-id"] == event.id
        assert received.meta["webhook-signature"].startswith("v1,")
        assert Webhook(ep.HTTP_SECRET).verify(received.body, received.meta) == event.to_dict()

    @pytest.mark.anyio
    async def test_without_a_secret_deliveries_go_unsigned_and_start_up_says_so(
        self, endpoint: Endpoint
    ) -> None:
        with structlog.testing.capture_logs() as logs:
            async with sink_from_url(endpoint.url(), SinkOptions()) as sink:
                await sink.publish(make_event())
        [received] = await until(endpoint.received, 1)
        assert "webhook-signature" not in received.meta
        assert [log["event"] for log in logs if log["log_level"] == "warning"] == ["http_sink.unsigned"]


class TestRedisSink(NetworkSinkContract):
    def open_endpoint(self) -> AbstractAsyncContextManager[Endpoint]:
        return ep.redis_endpoint(redis_url())

    @pytest.mark.anyio
    async def test_entries_carry_id_and_type_fields(self, sink: Sink, endpoint: Endpoint) -> None:
        event = make_event(type="kontext.edit.failed")
        await sink.publish(event)
        [received] = await until(endpoint.received, 1)
        assert received.meta == {"id": event.id, "type": "kontext.edit.failed"}

    @pytest.mark.anyio
    async def test_maxlen_trims_the_stream_approximately(self, endpoint: Endpoint) -> None:
        url = endpoint.url() + "&maxlen=10"
        async with sink_from_url(url) as sink:
            for start in range(0, 500, 50):
                batch = [make_event(n) for n in range(start, start + 50)]
                assert await sink.publish_batch(batch) == [None] * 50
        kept = await endpoint.received()
        assert 10 <= len(kept) < 500  # "~": whole nodes are dropped, so at least maxlen stay
        assert ep.structured(kept[-1])["id"] == "job-0499"  # the newest are kept


class TestNatsSink(NetworkSinkContract):
    deduplicates = True  # Nats-Msg-Id is the event id: JetStream keeps one copy within its window

    def open_endpoint(self) -> AbstractAsyncContextManager[Endpoint]:
        return ep.nats_endpoint(nats_url())

    @pytest.mark.anyio
    async def test_messages_carry_the_event_id_as_nats_msg_id(self, sink: Sink, endpoint: Endpoint) -> None:
        await sink.publish(make_event())
        [received] = await until(endpoint.received, 1)
        assert received.meta["Nats-Msg-Id"] == "job-0001"

    @pytest.mark.anyio
    async def test_an_existing_stream_is_used_as_it_is(self, endpoint: ep.NatsEndpoint) -> None:
        import nats

        nc = await nats.connect(endpoint.server)
        try:
            js = nc.jetstream()
            await js.add_stream(name=endpoint.stream, subjects=[endpoint.subject, "contract.other"])
            async with sink_from_url(endpoint.url()) as sink:
                await sink.publish(make_event())
            info = await js.stream_info(endpoint.stream)
        finally:
            await nc.close()
        assert info.config.subjects == [endpoint.subject, "contract.other"]
        assert len(await endpoint.received()) == 1

    @pytest.mark.anyio
    async def test_a_subject_no_stream_captures_is_retried(self, endpoint: ep.NatsEndpoint) -> None:
        url = endpoint.url().split("&stream=")[0]  # no stream named, and none for the subject
        async with sink_from_url(url, SinkOptions(timeout_s=2)) as sink:
            failure = await outcome(sink.publish(make_event()))
        assert failure is not None and failure.retryable


class TestAmqpSink(NetworkSinkContract):
    def open_endpoint(self) -> AbstractAsyncContextManager[Endpoint]:
        return ep.amqp_endpoint(amqp_url())

    @pytest.mark.anyio
    async def test_messages_are_persistent_with_ce_headers(self, sink: Sink, endpoint: Endpoint) -> None:
        event = make_event()
        await sink.publish(event)
        [received] = await until(endpoint.received, 1)
        meta = received.meta
        assert (meta["message_id"], meta["content_type"]) == (event.id, "application/cloudevents+json")
        assert (meta["delivery_mode"], meta["routing_key"]) == ("2", event.type)
        attributes = {k: v for k, v in event.to_dict().items() if k not in {"data", "datacontenttype"}}
        assert {k: v for k, v in meta.items() if k.startswith("ce-")} == {
            f"ce-{k}": v for k, v in attributes.items()
        }
        message = RabbitMQMessage(
            headers={k: v for k, v in meta.items() if k.startswith("ce-")},
            content_type=meta["content_type"],
            body=received.body,
        )
        parsed = from_rabbitmq(message, JSONFormat())  # the SDK's RabbitMQ binding reads it as a CloudEvent
        assert (parsed.get_id(), parsed.get_data()) == (event.id, event.data)

    @pytest.mark.anyio
    async def test_routing_key_overrides_the_event_type(self, endpoint: Endpoint) -> None:
        async with sink_from_url(endpoint.url() + "&routing_key=edits.done") as sink:
            await sink.publish(make_event())
        [received] = await until(endpoint.received, 1)
        assert received.meta["routing_key"] == "edits.done"

    @pytest.mark.anyio
    async def test_a_missing_exchange_is_declared_durable_topic(self) -> None:
        import aio_pika

        name = ep.unique("contract-declared-")
        async with sink_from_url(ep.with_query(amqp_url(), None, exchange=name)) as sink:
            await sink.ping()
        async with await aio_pika.connect(amqp_url()) as connection:
            channel = await connection.channel()
            # Declaring it again with other arguments would close the channel (PRECONDITION_FAILED).
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            await exchange.delete()

    @pytest.mark.anyio
    async def test_an_existing_exchange_is_used_as_it_is(self) -> None:
        import aio_pika

        name = ep.unique("contract-fanout-")
        async with await aio_pika.connect(amqp_url()) as connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=False)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(exchange)
            async with sink_from_url(ep.with_query(amqp_url(), None, exchange=name)) as sink:
                await sink.publish(make_event())
            [received] = await until(ep.AmqpEndpoint(amqp_url(), queue, name).received, 1)
            assert_is(received, make_event())
            await exchange.delete()

    @pytest.mark.anyio
    async def test_an_exchange_deleted_after_the_declare_is_a_definite_refusal(self) -> None:
        import aio_pika

        name = ep.unique("contract-deleted-")
        async with await aio_pika.connect(amqp_url()) as connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(exchange, "#")
            async with sink_from_url(ep.with_query(amqp_url(), None, exchange=name)) as sink:
                await sink.publish(make_event(1))
                await exchange.delete()
                failure = await outcome(sink.publish(make_event(2)))
                assert failure is not None and not failure.retryable, failure
                # The next event declares the exchange again; its binding went with the old one.
                again = await outcome(sink.publish(make_event(3)))
                assert again is not None and again.retryable and "no queue is bound" in str(again)
            await channel.exchange_delete(name)

    @pytest.mark.anyio
    async def test_an_event_no_queue_is_bound_for_is_retried(self) -> None:
        import aio_pika

        name = ep.unique("contract-unbound-")
        async with sink_from_url(ep.with_query(amqp_url(), None, exchange=name)) as sink:
            failure = await outcome(sink.publish(make_event()))
        async with await aio_pika.connect(amqp_url()) as connection:
            await (await connection.channel()).exchange_delete(name)  # the sink declared it
        assert failure is not None and failure.retryable and "no queue is bound" in str(failure)


class TestMqttSink(NetworkSinkContract):
    def open_endpoint(self) -> AbstractAsyncContextManager[Endpoint]:
        return ep.mqtt_endpoint(mqtt_url())

    @pytest.mark.anyio
    async def test_qos_1_by_default_and_2_when_asked(self, endpoint: Endpoint) -> None:
        async with sink_from_url(endpoint.url()) as at_least_once:
            await at_least_once.publish(make_event(1))
        async with sink_from_url(endpoint.url() + "&qos=2") as exactly_once:
            await exactly_once.publish(make_event(2))
        received = await until(endpoint.received, 2)
        assert sorted((str(ep.structured(r)["id"]), r.meta["qos"]) for r in received) == [
            ("job-0001", "1"),
            ("job-0002", "2"),
        ]
