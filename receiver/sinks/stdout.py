"""Events as JSON lines on standard output."""

from __future__ import annotations

import sys

from receiver.models import Event
from receiver.sinks.base import SinkBase, event_line


class StdoutSink(SinkBase):
    name = "stdout://"

    async def publish(self, event: Event) -> None:
        sys.stdout.buffer.write(event_line(event))
        sys.stdout.buffer.flush()
