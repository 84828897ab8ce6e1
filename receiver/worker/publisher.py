"""Delivers the outbox: every event to every sink, at least once, always with the same event id.

Each claim of a delivery tries a few times at once (stamina) for blips; after that the delivery is due
again later with exponential backoff, never sooner than the sink's Retry-After. After
RECEIVER_DELIVERY_ATTEMPTS rounds it is dead-lettered, to be re-sent by `redeliver`.
"""

from __future__ import annotations

import dataclasses

import anyio
import stamina
import structlog

from receiver import lifecycle
from receiver.errors import SinkError, TransientError
from receiver.models import Event
from receiver.retry import backoff, is_retryable
from receiver.runtime import Runtime
from receiver.sinks import Sink
from receiver.stores import Delivery, DeliveryState

log = structlog.get_logger("receiver.publisher")

INLINE_ATTEMPTS = 3


async def publish_due(rt: Runtime, limit: int = 64) -> int:
    """Attempt every due delivery (concurrently); return how many were attempted."""
    deliveries = await rt.store.claim_deliveries(rt.clock(), rt.policy.lease_s, limit, list(rt.sinks))
    await deliver_claimed(rt, deliveries)
    return len(deliveries)


async def deliver_claimed(rt: Runtime, deliveries: list[Delivery]) -> None:
    """Deliver deliveries this process has claimed, all at once."""
    rt.held_deliveries.update(((d.event_id, d.sink), d) for d in deliveries)
    async with anyio.create_task_group() as tg:
        for delivery in deliveries:
            tg.start_soon(deliver, rt, delivery)


async def deliver(rt: Runtime, delivery: Delivery) -> None:
    try:
        await _deliver(rt, delivery)
    finally:
        rt.held_deliveries.pop((delivery.event_id, delivery.sink), None)


async def _deliver(rt: Runtime, delivery: Delivery) -> None:
    sink = rt.sinks[delivery.sink]
    event = await rt.store.event(delivery.event_id)
    if event is None:  # cannot happen: the event and its deliveries are written together
        await _record(rt, delivery, DeliveryState.DEAD, "event is missing")
        return
    try:
        await stamina.AsyncRetryingCaller(attempts=INLINE_ATTEMPTS, timeout=rt.policy.lease_s / 2)(
            is_retryable, _publish, sink, event
        )
    except Exception as exc:  # whatever a sink raises, the outbox keeps the event
        await _failed(rt, delivery, sink, exc)
        return
    rt.metrics.inc("deliveries", sink=sink.name, outcome="delivered")
    delivered = _next(rt, delivery, DeliveryState.DELIVERED, None)
    await rt.store.complete_delivery(
        delivered, expected_attempts=delivery.attempts, then=lambda job: lifecycle.published(job, rt.clock())
    )
    log.info("event.delivered", event_id=event.id, sink=sink.name, type=event.type)


async def _publish(sink: Sink, event: Event) -> None:
    try:
        await sink.publish(event)
    except (TransientError, OSError) as exc:
        raise exc if isinstance(exc, TransientError) else SinkError(str(exc), retryable=True) from exc


async def _failed(rt: Runtime, delivery: Delivery, sink: Sink, exc: Exception) -> None:
    retryable = isinstance(exc, TransientError) and exc.retryable
    dead = not retryable or delivery.attempts >= rt.settings.delivery_attempts
    rt.metrics.inc("deliveries", sink=sink.name, outcome="dead" if dead else "failed")
    log.warning(
        "event.delivery_failed",
        event_id=delivery.event_id,
        sink=sink.name,
        attempt=delivery.attempts,
        error=f"{type(exc).__name__}: {exc}",
        dead=dead,
    )
    retry_after = exc.retry_after if isinstance(exc, TransientError) else None
    delay = backoff(
        delivery.attempts, rt.policy.retry_base_s, rt.policy.retry_cap_s, delivery.event_id, retry_after
    )
    state = DeliveryState.DEAD if dead else DeliveryState.PENDING
    await _record(rt, delivery, state, f"{type(exc).__name__}: {exc}"[:500], delay)


async def _record(
    rt: Runtime, delivery: Delivery, state: DeliveryState, error: str | None, delay: float = 0.0
) -> None:
    await rt.store.save_delivery(
        _next(rt, delivery, state, error, delay), expected_attempts=delivery.attempts
    )


def _next(
    rt: Runtime, delivery: Delivery, state: DeliveryState, error: str | None, delay: float = 0.0
) -> Delivery:
    now = rt.clock()
    return dataclasses.replace(
        delivery,
        state=state,
        last_error=error,
        next_at=now + delay,
        delivered_at=now if state is DeliveryState.DELIVERED else None,
    )
