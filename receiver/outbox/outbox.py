"""Every sink's dispatcher, run side by side; what the rest of the process hands them and asks them."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import anyio

from receiver.metrics import Metrics
from receiver.outbox.dispatcher import DeliveryPolicy, Dispatcher
from receiver.services import Services
from receiver.sinks import Sink
from receiver.stores import Delivery, Store


class Outbox:
    def __init__(
        self,
        sinks: Mapping[str, Sink],
        store: Store,
        policy: DeliveryPolicy,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.dispatchers = {
            name: Dispatcher(sink, store, policy, clock, metrics) for name, sink in sinks.items()
        }

    @classmethod
    def for_services(cls, svc: Services) -> Outbox:
        settings, policy = svc.settings, svc.policy
        delivery = DeliveryPolicy(
            attempts=settings.delivery_attempts,
            concurrency=settings.sink_concurrency,
            timeout_s=settings.sink_timeout_s,
            lease_s=policy.lease_s,
            retry_base_s=policy.retry_base_s,
            retry_cap_s=policy.retry_cap_s,
        )
        return cls(svc.sinks, svc.store, delivery, svc.clock, svc.metrics)

    async def hand_over(self, deliveries: list[Delivery]) -> None:
        """Deliveries of one event, written already claimed for this process: each sink's dispatcher
        takes its own at once, and the caller goes on without waiting for any of them."""
        if not deliveries:
            return
        event = await self.store.event(deliveries[0].event_id)
        for delivery in deliveries:
            self.dispatchers[delivery.sink].hand_over(delivery, event)

    def wake(self) -> None:
        """Deliveries are due in the store (a new event, a redelivery): look now, not after the idle wait."""
        for dispatcher in self.dispatchers.values():
            dispatcher.wakeup.set()

    async def run(self, stopping: anyio.Event) -> None:
        async with anyio.create_task_group() as tg:
            for dispatcher in self.dispatchers.values():
                tg.start_soon(dispatcher.run, stopping)

    def held(self) -> list[Delivery]:
        """Deliveries this process has claimed and not recorded yet, released at shutdown."""
        return [delivery for d in self.dispatchers.values() for delivery in d.held.values()]
