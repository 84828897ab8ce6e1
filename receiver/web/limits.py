"""Per-process bounds on what requests may hold: upload slots, and the queue of jobs waiting upstream."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from receiver.errors import Overloaded, TooManyRequests
from receiver.models import JobState
from receiver.stores import Store

QUEUE_RECOUNT_S = 1.0


class Slots:
    """At most `size` holders at once; one more is refused at once (503, with `refusal`), never kept
    waiting. A holder takes a slot for a block (`take`), or from `acquire` until its `release`."""

    def __init__(self, size: int, refusal: str) -> None:
        self.size = size
        self.refusal = refusal
        self.used = 0

    def acquire(self) -> None:
        if self.used >= self.size:
            raise Overloaded(self.refusal)
        self.used += 1

    def release(self) -> None:
        self.used -= 1

    @contextmanager
    def take(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


class QueueBound:
    """Refuses (429) new jobs while `limit` wait for an upstream slot. Far from the bound the store is
    asked at most once per `QUEUE_RECOUNT_S` (jobs accepted in between are added on top); at the bound
    it is asked again before refusing."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self.queued = 0
        self.counted_at: float | None = None

    async def check(self, store: Store) -> None:
        now = self.clock()
        stale = self.counted_at is None or now - self.counted_at >= QUEUE_RECOUNT_S
        if stale or self.queued >= self.limit:
            self.queued = await store.count({JobState.CREATED})
            self.counted_at = now
        if self.queued >= self.limit:
            raise TooManyRequests(
                f"{self.queued} edits are already waiting for BFL; try again later", retry_after=5
            )

    def added(self) -> None:
        self.queued += 1


class RequestLimits:
    def __init__(self, max_uploads: int, max_queued: int, body_timeout_s: float) -> None:
        self.uploads = Slots(max_uploads, f"all {max_uploads} upload slots are in use; try again shortly")
        self.queue = QueueBound(max_queued)
        self.body_timeout_s = body_timeout_s
