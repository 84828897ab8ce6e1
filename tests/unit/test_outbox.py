"""The outbox's dispatchers, one per sink, on the in-memory store with a clock the test moves: what is
retried, what is dead-lettered, a failing sink paused and probed, a hanging sink holding back nobody,
several due events in one batch."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest
import stamina

from receiver.errors import SinkError
from receiver.metrics import Metrics
from receiver.models import Event
from receiver.outbox import DeliveryPolicy, Outbox
from receiver.outbox.failures import as_sink_error
from receiver.sinks import Sink
from receiver.sinks.base import SinkBase
from receiver.sinks.memory import MemorySink
from receiver.stores import Delivery, DeliveryState
from receiver.stores.memory import MemoryStore
from tests.clock import FakeClock
from tests.contract.test_store_contract import T0, final, make_job

pytestmark = pytest.mark.anyio

POLICY = DeliveryPolicy(attempts=3, concurrency=4, timeout_s=5, lease_s=60, retry_base_s=10, retry_cap_s=60)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_inline_backoff() -> Iterator[None]:
    """stamina's quick retries keep their count but do not sleep."""
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


class ClientBlewUp(Exception):
    """An exception type no part of the receiver knows, as a broker client might raise."""


class ScriptedSink(SinkBase):
    """A sink that fails with `error` while it is set, and records each batch it is asked to publish."""

    def __init__(self, name: str, error: Exception | None = None) -> None:
        self.name = name
        self.error = error
        self.batches: list[list[str]] = []
        self.published: list[str] = []
        self.hang = False

    async def publish_batch(self, events: Sequence[Event]) -> list[Exception | None]:
        self.batches.append([event.id for event in events])
        if self.hang:
            await anyio.sleep_forever()
        if self.error is not None:
            return [self.error] * len(events)
        self.published += [event.id for event in events]
        return [None] * len(events)


class Running:
    def __init__(self, store: MemoryStore, outbox: Outbox, clock: FakeClock) -> None:
        self.store, self.outbox, self.clock = store, outbox, clock

    async def event(self, job_id: str, sinks: Sequence[str]) -> None:
        """A finished job whose event is due for `sinks`, as another process left it."""
        job = await self.store.insert(make_job(job_id))
        transition = final(job)
        assert await self.store.save(transition.job, event=transition.event, sinks=sinks) is not None
        self.outbox.wake()

    async def delivery(self, job_id: str, sink: str) -> Delivery:
        return next(d for d in await self.store.deliveries(job_id) if d.sink == sink)

    async def failed(self, job_id: str, sink: str) -> bool:
        return (await self.delivery(job_id, sink)).last_error is not None

    async def state_is(self, job_id: str, sink: str, state: DeliveryState) -> bool:
        return (await self.delivery(job_id, sink)).state is state


async def wait_for(condition: Callable[[], object], what: str) -> None:
    """Until `condition()` (or what it returns, when awaitable) is true; fails after 5 s."""
    deadline = anyio.current_time() + 5
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if anyio.current_time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.005)


@asynccontextmanager
async def running_outbox(*sinks: Sink, policy: DeliveryPolicy = POLICY) -> AsyncIterator[Running]:
    store, clock, stopping = MemoryStore(), FakeClock(T0 + 100), anyio.Event()
    outbox = Outbox({sink.name: sink for sink in sinks}, store, policy, clock, Metrics())
    async with anyio.create_task_group() as tg:
        tg.start_soon(outbox.run, stopping)
        yield Running(store, outbox, clock)
        stopping.set()
        outbox.wake()
        tg.cancel_scope.cancel()


def test_an_unknown_exception_is_retryable_and_only_a_refusal_is_not() -> None:
    assert as_sink_error(ClientBlewUp("boom")).retryable
    assert as_sink_error(OSError("reset")).retryable
    assert as_sink_error(TimeoutError()).retryable
    assert not as_sink_error(SinkError("400", retryable=False)).retryable
    assert "ClientBlewUp: boom" in str(as_sink_error(ClientBlewUp("boom")))


async def test_an_unknown_client_exception_is_retried_not_dead_lettered() -> None:
    sink = ScriptedSink("scripted://a", ClientBlewUp("connection state is weird"))
    async with running_outbox(sink) as run:
        await run.event("job-1", [sink.name])
        await wait_for(lambda: len(sink.batches) >= 3, "the inline tries")  # stamina's quick retries
        await wait_for(lambda: run.failed("job-1", sink.name), "the failure recorded")
        delivery = await run.delivery("job-1", sink.name)
        assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, 1)
        assert delivery.next_at > run.clock()  # due again after backoff
        assert "ClientBlewUp" in (delivery.last_error or "")


async def test_a_definite_refusal_dead_letters_at_once() -> None:
    sink = ScriptedSink("scripted://a", SinkError("scripted://a answered 400", retryable=False))
    async with running_outbox(sink) as run:
        await run.event("job-1", [sink.name])
        await wait_for(lambda: run.state_is("job-1", sink.name, DeliveryState.DEAD), "a dead letter")
        assert sink.batches == [["job-1"]]  # not tried again


async def test_a_failing_sink_is_paused_then_probed_with_one_event() -> None:
    sink = ScriptedSink("scripted://a", SinkError("503", retryable=True))
    async with running_outbox(sink) as run:
        await run.event("job-1", [sink.name])
        await wait_for(lambda: run.outbox.dispatchers[sink.name].health.failures == 1, "the pause")
        tried = len(sink.batches)
        for n in range(2, 6):
            await run.event(f"job-{n}", [sink.name])
        with anyio.fail_after(5):
            await anyio.wait_all_tasks_blocked()  # the dispatcher has done all it will do now
        assert len(sink.batches) == tried  # paused: nothing is tried, nothing spends an attempt
        assert [(await run.delivery(f"job-{n}", sink.name)).attempts for n in range(2, 6)] == [0] * 4
        sink.error = None
        run.clock.advance(POLICY.retry_cap_s)
        run.outbox.wake()
        await wait_for(lambda: len(sink.published) == 5, "every event once the sink answers")
        assert sink.batches[tried] == ["job-2"]  # one probe first, then the rest in one batch
        assert sorted(sink.batches[tried + 1]) == ["job-1", "job-3", "job-4", "job-5"]


async def test_a_long_outage_is_still_probed_every_30_retry_bases() -> None:
    sink = ScriptedSink("scripted://a", SinkError("503", retryable=True))
    policy = dataclasses.replace(POLICY, attempts=100, retry_base_s=1.0, retry_cap_s=600.0)
    async with running_outbox(sink, policy=policy) as run:
        await run.event("job-1", [sink.name])
        health = run.outbox.dispatchers[sink.name].health
        pauses = []
        for failures in range(1, 11):  # 1 s, 2 s, ... would be 512 s by the tenth pause without a cap
            await wait_for(lambda: health.failures == failures, f"failure {failures}")  # noqa: B023
            pauses.append(health.paused_until - run.clock())
            run.clock.advance(1000.0)  # past the pause and the event's own backoff
            run.outbox.wake()
        assert max(pauses) <= 30.0 < pauses[-1] * 2  # capped, and the cap (with its jitter) reached


async def test_a_hanging_sink_holds_back_no_other_sink() -> None:
    hanging, healthy = ScriptedSink("scripted://hangs"), MemorySink("outbox-healthy")
    hanging.hang = True
    async with running_outbox(hanging, healthy) as run:
        for n in range(1, 4):
            await run.event(f"job-{n}", [hanging.name, healthy.name])
            await wait_for(lambda: len(healthy.events) == n, f"event {n} at the healthy sink")  # noqa: B023
        assert [e.id for e in healthy.events] == ["job-1", "job-2", "job-3"]
        await wait_for(lambda: run.state_is("job-3", healthy.name, DeliveryState.DELIVERED), "the record")
        assert (await run.delivery("job-3", hanging.name)).state is DeliveryState.PENDING


async def test_events_due_together_go_in_one_batch() -> None:
    sink = ScriptedSink("scripted://a")
    store, clock = MemoryStore(), FakeClock(T0 + 100)
    outbox = Outbox({sink.name: sink}, store, POLICY, clock, Metrics())
    for n in range(1, 4):  # due before the dispatcher starts
        job = await store.insert(make_job(f"job-{n}"))
        transition = final(job)
        await store.save(transition.job, event=transition.event, sinks=[sink.name])
    stopping = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(outbox.run, stopping)
        await wait_for(lambda: len(sink.published) == 3, "the three events")
        stopping.set()
        outbox.wake()
    assert [sorted(batch) for batch in sink.batches] == [["job-1", "job-2", "job-3"]]
