"""One sink's deliveries: taken from the hand-over queue (events just stored) and from the store (due
retries, redeliveries, work another process left), published in batches with the sink's own
concurrency, each outcome recorded.

A batch is tried a few times at once (stamina) for blips; what still fails is due again later with
exponential backoff, never sooner than the sink's Retry-After, and after `DeliveryPolicy.attempts`
rounds is dead-lettered, to be re-sent by `redeliver`. While a sink fails as a whole, its dispatcher
pauses with backoff of its own (up to `PROBE_EVERY_BASES` x the retry base, or the sink's Retry-After)
and then probes with one event at a time: a sink that is down for an hour uses up few attempts and,
soon after it answers again, gets everything that waited at once. Other sinks and downloads never
wait for it.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import stamina
import structlog

from receiver import lifecycle
from receiver.errors import SinkError
from receiver.logs import about_job
from receiver.metrics import Metrics, Step
from receiver.models import Event, epoch
from receiver.outbox.failures import as_sink_error
from receiver.retry import backoff, is_retryable
from receiver.sinks import Sink
from receiver.stores import Delivery, DeliveryState, Store
from receiver.worker.wakeup import Wakeup

log = structlog.get_logger("receiver.outbox")

INLINE_ATTEMPTS = 3
IDLE_S = 1.0  # how often an idle dispatcher looks at the store for deliveries due
PROBE_EVERY_BASES = 30  # a failing sink is probed at least every 30 x retry_base_s (30 s by default)


@dataclass(frozen=True)
class DeliveryPolicy:
    attempts: int = 12  # rounds before a delivery is dead-lettered
    concurrency: int = 16  # events in flight to one sink
    timeout_s: float = 10.0  # one try of a batch
    lease_s: float = 120.0
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0


@dataclass
class SinkHealth:
    """What the dispatcher has seen of its sink lately."""

    failures: int = 0  # batches in a row that failed as a whole
    paused_until: float = 0.0
    last_error: str | None = None


Item = tuple[Delivery, Event | None]


class Dispatcher:
    def __init__(
        self,
        sink: Sink,
        store: Store,
        policy: DeliveryPolicy,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self.sink = sink
        self.store = store
        self.policy = policy
        self.clock = clock
        self.metrics = metrics
        self.health = SinkHealth()
        self.wakeup = Wakeup()
        self.held: dict[str, Delivery] = {}  # claimed by this process, not yet recorded: event id -> it
        self._queue: deque[Item] = deque()
        self._free = policy.concurrency

    def hand_over(self, delivery: Delivery, event: Event | None) -> None:
        """A delivery already claimed for this process (written so with its event): deliver it next."""
        self.held[delivery.event_id] = delivery
        self._queue.append((delivery, event))
        self.wakeup.set()

    async def run(self, stopping: anyio.Event) -> None:
        """Deliver until `stopping` is set; batches in flight then finish (the caller bounds how long)."""
        async with anyio.create_task_group() as tg:
            while not stopping.is_set():
                self.wakeup.clear()
                try:
                    batch = await self._take()
                except Exception:  # the store failed; the claims lapse and are taken again
                    log.exception("outbox.take_failed", sink=self.sink.name)
                    batch = []
                if batch:
                    self._free -= len(batch)
                    tg.start_soon(self._deliver, batch)
                else:
                    await self.wakeup.wait(self._idle_s())

    def _idle_s(self) -> float:
        pause = self.health.paused_until - self.clock()
        return min(IDLE_S, pause) if pause > 0 else IDLE_S

    async def _take(self) -> list[Item]:
        if self._free == 0:
            return []
        now = self.clock()
        if self.health.paused_until > now:
            await self._give_back_queue(self.health.paused_until)
            return []
        if self.health.failures and self._free < self.policy.concurrency:
            return []  # a probe is out: wait for its answer before sending more to a failing sink
        limit = 1 if self.health.failures else self._free
        batch = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
        if len(batch) < limit:
            claimed = await self.store.claim_deliveries(
                now, self.policy.lease_s, limit - len(batch), [self.sink.name]
            )
            self.held.update((d.event_id, d) for d in claimed)
            batch += [(d, await self.store.event(d.event_id)) for d in claimed]
        return batch

    async def _give_back_queue(self, due_at: float) -> None:
        """Hand-overs that came while the sink is paused go back to the store, their claim undone."""
        while self._queue:
            delivery, _ = self._queue.popleft()
            self.held.pop(delivery.event_id, None)
            unclaimed = dataclasses.replace(delivery, attempts=delivery.attempts - 1, next_at=due_at)
            await self.store.save_delivery(unclaimed, expected_attempts=delivery.attempts)

    async def _deliver(self, batch: list[Item]) -> None:
        try:
            deliveries, events = [], []
            for delivery, event in batch:
                if event is None:  # cannot happen: the event and its deliveries are written together
                    await self._record(delivery, SinkError("event is missing", retryable=False))
                else:
                    deliveries.append(delivery)
                    events.append(event)
            errors = await self._publish(events)
            # All at once: a store with group commit (PostgreSQL) writes them in one transaction.
            async with anyio.create_task_group() as tg:
                for delivery, event, error in zip(deliveries, events, errors, strict=True):
                    tg.start_soon(self._record_about, delivery, error, event)
            self._note(errors)
        except Exception:  # recording failed: the claims lapse and the deliveries are taken again
            log.exception("outbox.record_failed", sink=self.sink.name)
        finally:
            self._free += len(batch)
            for delivery, _ in batch:
                if self.held.get(delivery.event_id) == delivery:
                    del self.held[delivery.event_id]
            self.wakeup.set()

    async def _publish(self, events: list[Event]) -> list[SinkError | None]:
        """Publish `events`, retrying at once (a few times) those that failed retryably."""
        errors: list[SinkError | None] = [None] * len(events)
        todo = list(range(len(events)))

        async def attempt() -> None:
            nonlocal todo
            try:
                with anyio.fail_after(self.policy.timeout_s):
                    outcomes = await self.sink.publish_batch([events[i] for i in todo])
            except Exception as exc:  # the whole batch failed (connection, timeout)
                outcomes = [exc] * len(todo)
            retry: list[SinkError] = []
            again: list[int] = []
            for index, outcome in zip(todo, outcomes, strict=True):
                error = errors[index] = None if outcome is None else as_sink_error(outcome)
                if error is not None and error.retryable:
                    retry.append(error)
                    again.append(index)
            todo = again
            if retry:
                raise retry[0]  # stamina decides from it whether, and when, to try again

        if not events:
            return errors
        try:
            caller = stamina.AsyncRetryingCaller(attempts=INLINE_ATTEMPTS, timeout=self.policy.lease_s / 2)
            await caller(is_retryable, attempt)
        except SinkError:  # the outcomes are in `errors`
            pass
        return errors

    async def _record_about(self, delivery: Delivery, error: SinkError | None, event: Event) -> None:
        with about_job(event.id, event.data.get("bfl_task_id")):  # an event has its job's id
            await self._record(delivery, error, event)

    async def _record(self, delivery: Delivery, error: SinkError | None, event: Event | None = None) -> None:
        now, sink = self.clock(), self.sink.name
        if error is None:
            self.metrics.deliveries.labels(sink, "delivered").inc()
            finished = event.data["timings"]["bfl_finished_at"] if event is not None else None
            if finished is not None:
                self.metrics.end_to_end_seconds.labels(sink).observe(max(0.0, now - epoch(finished)))
            delivered = dataclasses.replace(
                delivery, state=DeliveryState.DELIVERED, last_error=None, next_at=now, delivered_at=now
            )
            publish = Step(lambda job: lifecycle.published(job, now))
            if await self.store.complete_delivery(
                delivered, expected_attempts=delivery.attempts, then=publish
            ):
                self.metrics.count(publish)
            log.info("event.delivered", event_id=delivery.event_id, sink=sink)
            return
        dead = not error.retryable or delivery.attempts >= self.policy.attempts
        self.metrics.deliveries.labels(sink, "dead" if dead else "failed").inc()
        log.warning(
            "event.delivery_failed",
            event_id=delivery.event_id,
            sink=sink,
            attempt=delivery.attempts,
            error=str(error),
            dead=dead,
        )
        delay = backoff(
            delivery.attempts,
            self.policy.retry_base_s,
            self.policy.retry_cap_s,
            delivery.event_id,
            error.retry_after,
        )
        failed = dataclasses.replace(
            delivery,
            state=DeliveryState.DEAD if dead else DeliveryState.PENDING,
            last_error=str(error)[:500],
            next_at=now + delay,
            delivered_at=None,
        )
        await self.store.save_delivery(failed, expected_attempts=delivery.attempts)

    def _note(self, errors: list[SinkError | None]) -> None:
        """The sink answered (a delivery, or a refusal of its own): no pause. Otherwise pause longer."""
        health, now = self.health, self.clock()
        if not errors:
            return
        if any(error is None or not error.retryable for error in errors):
            if health.failures:
                log.info("outbox.sink_recovered", sink=self.sink.name, after_failures=health.failures)
            health.failures, health.paused_until = 0, 0.0
            return
        health.failures += 1
        health.last_error = str(errors[0])[:500]
        retry_after = max((e.retry_after or 0.0 for e in errors if e is not None), default=0.0)
        cap = min(self.policy.retry_cap_s, PROBE_EVERY_BASES * self.policy.retry_base_s)
        pause = backoff(health.failures, self.policy.retry_base_s, cap, self.sink.name, retry_after)
        health.paused_until = now + pause
        log.warning(
            "outbox.sink_paused", sink=self.sink.name, seconds=round(pause, 3), error=health.last_error
        )
