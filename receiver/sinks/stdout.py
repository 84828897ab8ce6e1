"""Events as JSON lines on standard output."""

from __future__ import annotations

import sys

from receiver.models import Event
from receiver.resource import ResourceBase
from receiver.sinks.base import event_line


class StdoutSink(ResourceBase):
    name = "stdout://"

    async def publish(self, event: Event) -> None:
        sys.stdout.buffer.write(event_line(event))
        sys.stdout.buffer.flush()
