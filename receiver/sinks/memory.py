"""Events kept in memory, for tests: `memory://NAME`; every sink of one name in a process shares
one list, so a test reads what a receiver built from its settings published."""

from __future__ import annotations

from collections import defaultdict

from receiver.errors import ConfigError
from receiver.models import Event
from receiver.sinks.base import SinkBase, SinkOptions

_PUBLISHED: defaultdict[str, list[Event]] = defaultdict(list)


class MemorySink(SinkBase):
    def __init__(self, name: str = "default") -> None:
        self.name = f"memory://{name}"
        self.events = _PUBLISHED[name]

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> MemorySink:
        name = url.removeprefix("memory://")
        if not name or "?" in name or "/" in name:
            raise ConfigError(f"sink {url}: expected memory://NAME (letters, digits, - and _)")
        return cls(name)

    async def publish(self, event: Event) -> None:
        self.events.append(event)

    @staticmethod
    def published(name: str) -> list[Event]:
        """What every `memory://name` sink of this process has published, in order."""
        return _PUBLISHED[name]
