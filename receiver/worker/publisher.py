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
from receiver.services import Services
from receiver.sinks import Sink
from receiver.stores import Delivery, DeliveryState
from receiver.worker.scheduler import Scheduler

log = structlog.get_logger("receiver.publisher")

INLINE_ATTEMPTS = 3


async def publish_due(svc: Services, sched: Scheduler, limit: int = 64) -> int:
    """Attempt every due delivery (concurrently); return how many were attempted."""
    deliveries = await svc.store.claim_deliveries(svc.clock(), svc.policy.lease_s, limit, list(svc.sinks))
    await deliver_claimed(svc, sched, deliveries)
    return len(deliveries)


async def deliver_claimed(svc: Services, sched: Scheduler, deliveries: list[Delivery]) -> None:
    """Deliver deliveries this process has claimed, all at once."""
    sched.hold_deliveries(deliveries)
    async with anyio.create_task_group() as tg:
        for delivery in deliveries:
            tg.start_soon(deliver, svc, sched, delivery)


async def deliver(svc: Services, sched: Scheduler, delivery: Delivery) -> None:
    """Never raises `Exception`: one delivery's trouble is retried with backoff for it alone."""
    try:
        await _deliver(svc, delivery)
    except Exception as exc:  # around the sink call: reading the event, recording the outcome
        svc.metrics.inc("job_step_crashes", stage="publish")
        log.exception("event.delivery_crashed", event_id=delivery.event_id, sink=delivery.sink)
        failure = SinkError(f"{type(exc).__name__}: {exc}", retryable=True)
        try:
            await _failed(svc, delivery, svc.sinks[delivery.sink], failure)
        except Exception:  # the store itself is failing: the claim lapses and the delivery is due again
            log.exception("event.delivery_crash_not_recorded", event_id=delivery.event_id)
    finally:
        sched.delivery_done(delivery)


async def _deliver(svc: Services, delivery: Delivery) -> None:
    sink = svc.sinks[delivery.sink]
    event = await svc.store.event(delivery.event_id)
    if event is None:  # cannot happen: the event and its deliveries are written together
        await _record(svc, delivery, DeliveryState.DEAD, "event is missing")
        return
    try:
        await stamina.AsyncRetryingCaller(attempts=INLINE_ATTEMPTS, timeout=svc.policy.lease_s / 2)(
            is_retryable, _publish, sink, event
        )
    except Exception as exc:  # whatever a sink raises, the outbox keeps the event
        await _failed(svc, delivery, sink, exc)
        return
    svc.metrics.inc("deliveries", sink=sink.name, outcome="delivered")
    delivered = _next(svc, delivery, DeliveryState.DELIVERED, None)
    await svc.store.complete_delivery(
        delivered, expected_attempts=delivery.attempts, then=lambda job: lifecycle.published(job, svc.clock())
    )
    log.info("event.delivered", event_id=event.id, sink=sink.name, type=event.type)


async def _publish(sink: Sink, event: Event) -> None:
    try:
        await sink.publish(event)
    except (TransientError, OSError) as exc:
        raise exc if isinstance(exc, TransientError) else SinkError(str(exc), retryable=True) from exc


async def _failed(svc: Services, delivery: Delivery, sink: Sink, exc: Exception) -> None:
    retryable = isinstance(exc, TransientError) and exc.retryable
    dead = not retryable or delivery.attempts >= svc.settings.delivery_attempts
    svc.metrics.inc("deliveries", sink=sink.name, outcome="dead" if dead else "failed")
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
        delivery.attempts, svc.policy.retry_base_s, svc.policy.retry_cap_s, delivery.event_id, retry_after
    )
    state = DeliveryState.DEAD if dead else DeliveryState.PENDING
    await _record(svc, delivery, state, f"{type(exc).__name__}: {exc}"[:500], delay)


async def _record(
    svc: Services, delivery: Delivery, state: DeliveryState, error: str | None, delay: float = 0.0
) -> None:
    await svc.store.save_delivery(
        _next(svc, delivery, state, error, delay), expected_attempts=delivery.attempts
    )


def _next(
    svc: Services, delivery: Delivery, state: DeliveryState, error: str | None, delay: float = 0.0
) -> Delivery:
    now = svc.clock()
    return dataclasses.replace(
        delivery,
        state=state,
        last_error=error,
        next_at=now + delay,
        delivered_at=now if state is DeliveryState.DELIVERED else None,
    )
