"""Delivers the outbox: every event to every sink, at least once, always with the same event id."""

from __future__ import annotations

import dataclasses

import structlog

from receiver import lifecycle
from receiver.runtime import Runtime
from receiver.stores import Delivery, DeliveryState, mutate

log = structlog.get_logger("receiver.publisher")

MAX_ATTEMPTS = 10
LEASE_S = 60.0


async def publish_due(rt: Runtime, limit: int = 100) -> int:
    """Attempt every due delivery once; return how many were attempted."""
    deliveries = await rt.store.claim_deliveries(rt.clock(), LEASE_S, limit)
    for delivery in deliveries:
        await deliver(rt, delivery)
    return len(deliveries)


async def deliver(rt: Runtime, delivery: Delivery) -> None:
    sink = rt.sinks.get(delivery.sink)
    event = await rt.store.event(delivery.event_id)
    if sink is None or event is None:
        reason = "sink is no longer configured" if sink is None else "event is missing"
        await _record(rt, delivery, DeliveryState.DEAD, reason)
        return
    try:
        await sink.publish(event)
    except Exception as exc:  # any sink failure is retried; the outbox keeps the event
        rt.metrics.inc("deliveries", sink=sink.name, outcome="failed")
        dead = delivery.attempts >= MAX_ATTEMPTS
        log.warning(
            "event.delivery_failed",
            event_id=event.id,
            sink=sink.name,
            attempt=delivery.attempts,
            error=f"{type(exc).__name__}: {exc}",
            dead=dead,
        )
        await _record(rt, delivery, DeliveryState.DEAD if dead else DeliveryState.PENDING, repr(exc)[:500])
        return
    rt.metrics.inc("deliveries", sink=sink.name, outcome="delivered")
    await _record(rt, delivery, DeliveryState.DELIVERED, None)
    log.info("event.delivered", event_id=event.id, sink=sink.name, type=event.type)
    remaining = [d for d in await rt.store.deliveries(event.id) if d.state is not DeliveryState.DELIVERED]
    if not remaining:
        await mutate(rt.store, event.id, lambda job: lifecycle.published(job, rt.clock()))


async def _record(rt: Runtime, delivery: Delivery, state: DeliveryState, error: str | None) -> None:
    now = rt.clock()
    delay = min(300.0, 2.0 ** (delivery.attempts - 1))
    updated = dataclasses.replace(
        delivery,
        state=state,
        last_error=error,
        next_at=now + delay if state is DeliveryState.PENDING else now,
        delivered_at=now if state is DeliveryState.DELIVERED else None,
    )
    await rt.store.save_delivery(updated, expected_attempts=delivery.attempts)
