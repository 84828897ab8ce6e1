"""Callbacks at exact monotonic times, from a Linux timerfd watched by the event loop.

asyncio and uvloop timers have millisecond resolution, which would make every open-loop send up to a
millisecond late (and that lateness would count as server latency). A timerfd armed at an absolute
CLOCK_MONOTONIC time wakes the loop within microseconds of it.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from collections.abc import Callable, Sequence

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Pacer:
    """Calls `fire(index)` at each time of `due` (perf_counter seconds, ascending), in order."""

    def __init__(self, due: Sequence[float], fire: Callable[[int], None]) -> None:
        self.due = due
        self.fire = fire
        self.next = 0
        self.done = asyncio.Event()
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._fd, self._expired)
        self._arm()

    def close(self) -> None:
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _arm(self) -> None:
        if self.next >= len(self.due):
            self.done.set()
            return
        at = self.due[self.next]  # perf_counter() is CLOCK_MONOTONIC on Linux
        seconds = int(at)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, max(1, int((at - seconds) * 1e9))))
        if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def _expired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        now = time.perf_counter()
        while self.next < len(self.due) and self.due[self.next] <= now:
            index = self.next
            self.next += 1
            self.fire(index)
        self._arm()
