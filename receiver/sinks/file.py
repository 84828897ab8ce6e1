"""Events appended to a JSON Lines file, one line per event, flushed to disk before it counts."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import anyio.to_thread

from receiver.models import Event
from receiver.registry import file_path
from receiver.sinks.base import SinkBase, SinkOptions, event_line


class FileSink(SinkBase):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"file://{path}"
        self._lock = anyio.Lock()

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> FileSink:
        """`file://relative/events.jsonl` or `file:///absolute/events.jsonl`."""
        return cls(file_path(url, "file sink"))

    async def open(self) -> None:
        await anyio.to_thread.run_sync(lambda: self.path.parent.mkdir(parents=True, exist_ok=True))

    async def publish(self, event: Event) -> None:
        line = event_line(event)
        async with self._lock:
            await anyio.to_thread.run_sync(self._append, line)

    def _append(self, line: bytes) -> None:
        # One write() on an O_APPEND descriptor: lines from several processes never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
