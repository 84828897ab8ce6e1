"""Job stores, chosen by `RECEIVER_STORE_URL`'s scheme."""

from __future__ import annotations

from receiver.registry import Registry
from receiver.stores.base import (
    Change,
    Delivery,
    DeliveryState,
    Overview,
    Store,
    StoreFigures,
    UpstreamLimits,
)
from receiver.stores.feed import FeedEntry

STORES: Registry[Store] = Registry(
    "store",
    {
        "memory": "receiver.stores.memory:MemoryStore",
        "sqlite": "receiver.stores.sqlite:SQLiteStore",
        "postgresql": "receiver.stores.postgres:PostgresStore",
        "postgres": "receiver.stores.postgres:PostgresStore",
    },
    extras={"postgresql": "postgres", "postgres": "postgres"},
)
store_from_url = STORES.from_url

__all__ = [
    "STORES",
    "Change",
    "Delivery",
    "DeliveryState",
    "FeedEntry",
    "Overview",
    "Store",
    "StoreFigures",
    "UpstreamLimits",
    "store_from_url",
]
