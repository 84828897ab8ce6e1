"""Lines of a JSONL sink file, timestamped as they appear (inotify, so no polling delay or CPU).

The file sink appends each event with a single write, so a line is complete once its newline is
there. Each event is recorded under its CloudEvent id (the job id) with the time its line was seen.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_IN_MODIFY = 0x00000002
_RESCAN_S = 0.1  # belt and braces: the file is read again this often even without a notification


@dataclass(frozen=True)
class Seen:
    at: float
    event: dict[str, Any]


class SinkWatcher:
    def __init__(self, path: Path, clock: Callable[[], float] = time.perf_counter) -> None:
        self.path = path
        self.clock = clock
        self.seen: dict[str, Seen] = {}
        self._offset = 0
        self._partial = b""
        self._fd = -1
        self._changed = asyncio.Event()
        self._rescan: asyncio.TimerHandle | None = None

    def __enter__(self) -> SinkWatcher:
        self.path.touch(exist_ok=True)
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0 or libc.inotify_add_watch(fd, str(self.path).encode(), _IN_MODIFY) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {self.path} failed")
        self._fd = fd
        self._offset = self.path.stat().st_size
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, self._notified)
        self._rescan = loop.call_later(_RESCAN_S, self._tick)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._rescan is not None:
            self._rescan.cancel()
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    async def wait_for(self, ids: set[str], within_s: float) -> bool:
        """Wait until every id in `ids` has been seen; False if that takes longer than `within_s`."""
        deadline = time.monotonic() + within_s
        while not ids.issubset(self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def _notified(self) -> None:
        now = self.clock()
        try:
            while os.read(self._fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._read(now)

    def _tick(self) -> None:
        self._read(self.clock())
        self._rescan = asyncio.get_running_loop().call_later(_RESCAN_S, self._tick)

    def _read(self, now: float) -> None:
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        if not data:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if line.strip():
                event = json.loads(line)
                self.seen.setdefault(str(event["id"]), Seen(now, event))
        self._changed.set()
