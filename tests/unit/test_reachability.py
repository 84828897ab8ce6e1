"""Sink reachability for `/readyz` and `/v1/overview`: one ping per sink per TTL of a clock the test
moves, shared by the callers that ask while it is in flight."""

from __future__ import annotations

import anyio
import pytest

from receiver.sinks.base import SinkBase
from receiver.sinks.reachability import Reachability
from tests.clock import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class PingedSink(SinkBase):
    """Counts its pings; fails them with `error` while it is set; with `gate`, each ping waits for it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pings = 0
        self.error: Exception | None = None
        self.gate: anyio.Event | None = None
        self.pinged = anyio.Event()

    async def ping(self) -> None:
        self.pings += 1
        self.pinged.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error


async def test_each_sink_is_pinged_once_per_ttl() -> None:
    clock = FakeClock(100.0)
    redis, nats = PingedSink("redis://r"), PingedSink("nats://n")
    sinks = Reachability({"redis://r": redis, "nats://n": nats}, ttl_s=5.0, clock=clock)
    nats.error = ConnectionRefusedError("refused")
    down = {"reachable": False, "error": "ConnectionRefusedError: refused"}
    for _ in range(10):  # a burst of probes and dashboard refreshes
        assert await sinks.report() == {"nats://n": down, "redis://r": {"reachable": True}}
    assert (redis.pings, nats.pings) == (1, 1)

    nats.error = None
    clock.advance(4.9)
    assert (await sinks.report())["nats://n"] == down  # still within the TTL
    clock.advance(0.1)
    assert (await sinks.report())["nats://n"] == {"reachable": True}
    assert (redis.pings, nats.pings) == (2, 2)


async def test_callers_arriving_during_a_ping_share_it() -> None:
    sink = PingedSink("amqp://a")
    sink.gate = anyio.Event()
    sinks = Reachability({"amqp://a": sink}, clock=FakeClock(0.0))
    answers: list[dict[str, dict[str, object]]] = []

    async def ask() -> None:
        answers.append(await sinks.report())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(ask)
            await sink.pinged.wait()
            await anyio.wait_all_tasks_blocked()  # every caller is waiting now
            sink.gate.set()
    assert sink.pings == 1 and answers == [{"amqp://a": {"reachable": True}}] * 5


async def test_a_ping_cancelled_with_its_caller_leaves_the_others_to_ping_again() -> None:
    sink = PingedSink("mqtt://m")
    sink.gate = anyio.Event()
    sinks = Reachability({"mqtt://m": sink}, clock=FakeClock(0.0))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            first = anyio.CancelScope()

            async def cancelled_caller() -> None:
                with first:
                    await sinks.report()

            tg.start_soon(cancelled_caller)
            await sink.pinged.wait()
            waiting: list[dict[str, dict[str, object]]] = []

            async def waiter() -> None:
                waiting.append(await sinks.report())

            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            sink.gate = None  # the next ping answers at once
            first.cancel()
    assert sink.pings == 2 and waiting == [{"mqtt://m": {"reachable": True}}]


async def test_a_hanging_sink_is_reported_after_the_ping_timeout() -> None:
    sink = PingedSink("http://h")
    sink.gate = anyio.Event()  # never set
    sinks = Reachability({"http://h": sink}, timeout_s=0.01, clock=FakeClock(0.0))
    with anyio.fail_after(5):
        assert await sinks.report() == {"http://h": {"reachable": False, "error": "TimeoutError"}}
