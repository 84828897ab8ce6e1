"""Event sinks, chosen by each `RECEIVER_SINKS` URL's scheme."""

from __future__ import annotations

from collections.abc import Sequence

from receiver.registry import Registry
from receiver.sinks.base import Sink, event_line

SINKS: Registry[Sink] = Registry(
    "sink",
    {
        "stdout": "receiver.sinks.stdout:StdoutSink",
        "file": "receiver.sinks.file:FileSink",
        "http": "receiver.sinks.http:HttpSink",
        "https": "receiver.sinks.http:HttpSink",
    },
)
sink_from_url = SINKS.from_url


def sinks_from_urls(urls: Sequence[str]) -> list[Sink]:
    return [sink_from_url(url) for url in urls]


__all__ = ["SINKS", "Sink", "event_line", "sink_from_url", "sinks_from_urls"]
