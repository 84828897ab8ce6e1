"""A global budget of polls per second, shared by everything that calls `get_result`."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio


class PollBudget:
    """Spaces calls at least `1 / per_second` apart; a caller over budget waits its turn."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / per_second
        self.clock = clock
        self.next_free = 0.0

    def reserve(self) -> float:
        """Take the next free slot; return how long to wait for it."""
        now = self.clock()
        slot = max(now, self.next_free)
        self.next_free = slot + self.interval
        return slot - now

    async def acquire(self) -> None:
        await anyio.sleep(self.reserve())
