"""The event sink interface."""

from __future__ import annotations

import json
from typing import Protocol

from receiver.models import Event
from receiver.resource import Resource


class Sink(Resource, Protocol):
    name: str  # the sink's URL without secrets; deliveries are recorded under it

    async def publish(self, event: Event) -> None:
        """Deliver `event`; return only once the sink has it. Raise to have it retried."""


def event_line(event: Event) -> bytes:
    """The event as one line of JSON (structured-mode CloudEvent), newline included."""
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
