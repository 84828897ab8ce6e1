"""The event sink interface, and what every sink shares."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self

import anyio

from receiver.models import Event
from receiver.resource import Resource, ResourceBase


@dataclass(frozen=True)
class SinkOptions:
    """What sinks take from the settings rather than from their URL (secrets never go in a URL)."""

    http_secret: str = field(default="", repr=False)  # RECEIVER_HTTP_SINK_SECRET, `whsec_...`
    timeout_s: float = 10.0  # one publish, connecting included


class Sink(Resource, Protocol):
    name: str  # the sink's URL without secrets; deliveries are recorded under it

    async def publish(self, event: Event) -> None:
        """Deliver `event`; return only once the sink has it. Raise to have it retried; a `SinkError`
        with `retryable=False` says the sink refused it for good."""

    async def publish_batch(self, events: Sequence[Event]) -> list[Exception | None]:
        """Deliver several events at once; one outcome per event (None: delivered), in order."""

    async def ping(self) -> None:
        """Raise if the sink cannot be reached now (for `/readyz`); connecting is part of it."""


class SinkBase(ResourceBase):
    """Defaults for a sink: its URL parsed by `from_url`, batches published concurrently, always reachable."""

    name: str

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> Self:
        return cls()

    async def publish(self, event: Event) -> None:
        raise NotImplementedError

    async def publish_batch(self, events: Sequence[Event]) -> list[Exception | None]:
        outcomes: list[Exception | None] = [None] * len(events)

        async def one(index: int, event: Event) -> None:
            try:
                await self.publish(event)
            except Exception as exc:  # each event's outcome is reported, not raised
                outcomes[index] = exc

        async with anyio.create_task_group() as tg:
            for index, event in enumerate(events):
                tg.start_soon(one, index, event)
        return outcomes

    async def ping(self) -> None:
        """Nothing to reach by default."""


def event_json(event: Event) -> bytes:
    """The event as JSON (structured-mode CloudEvent), on one line."""
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()


def event_line(event: Event) -> bytes:
    """The event as one line of JSON, newline included."""
    return event_json(event) + b"\n"
