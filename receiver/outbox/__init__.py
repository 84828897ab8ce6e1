"""The outbox: one dispatcher per sink, each with its own concurrency, retries, backoff and dead letters."""

from __future__ import annotations

from receiver.outbox.dispatcher import DeliveryPolicy, Dispatcher
from receiver.outbox.outbox import Outbox

__all__ = ["DeliveryPolicy", "Dispatcher", "Outbox"]
