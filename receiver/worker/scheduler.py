"""The background work's state in one process: claims held, hand-overs, wake-ups, webhooks in flight,
and the stop. Everything the worker modules share that is not a resource (see `receiver.services`)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio

from receiver.models import Job
from receiver.outbox import Outbox
from receiver.services import Services
from receiver.stores import Change
from receiver.worker.budget import PollBudget
from receiver.worker.handover import Work
from receiver.worker.wakeup import Wakeup

MAX_DEFER_S = 0.05
# The loops each change another process commits may have given work (see `Store.watch`).
WORK_FOR = {
    Change.JOB_CREATED: Work.SUBMIT,
    Change.SLOT_FREED: Work.SUBMIT,
    Change.RESULT_READY: Work.FETCH,
    Change.DELIVERY_DUE: Work.PUBLISH,
}


@dataclass
class Scheduler:
    """Implements `Handover` for the HTTP side of the same process."""

    download_slots: int  # received jobs the downloads may be handed at once
    poll_budget: PollBudget
    outbox: Outbox  # one dispatcher per sink: the `Work.PUBLISH` loops
    wakeups: dict[Work, Wakeup] = field(
        default_factory=lambda: {work: Wakeup() for work in Work if work is not Work.PUBLISH}
    )
    ready: bool = True
    stopping: anyio.Event = field(default_factory=anyio.Event)
    # `time.monotonic()` at `stop()`: a signal handler may call it outside any task, where anyio's
    # clock cannot be read.
    stopped_at: float | None = None
    # Work this process has claimed and not finished, released at shutdown so nobody waits out a lease.
    held_jobs: dict[str, int] = field(default_factory=dict)  # job id -> version when claimed (and the
    # outbox's held deliveries)

    # Received jobs a webhook handed straight to this process's downloads (claimed, so no store scan).
    handed_over: deque[Job] = field(default_factory=deque)
    webhooks_in_flight: int = 0
    webhooks_idle: anyio.Event = field(default_factory=anyio.Event)
    # Passes wake-ups on to the worker processes, in a web process of a multi-process `serve`.
    forward: Callable[[tuple[Work, ...]], None] | None = None

    @classmethod
    def for_services(cls, svc: Services, *, downloads: bool = True) -> Scheduler:
        """Without `downloads` (no background work in this process) nothing is handed over."""
        settings = svc.settings
        return cls(
            download_slots=settings.download_concurrency if downloads else 0,
            poll_budget=PollBudget(settings.max_polls_per_s),
            outbox=Outbox.for_services(svc),
        )

    def wake(self, *work: Work) -> None:
        for name in work:
            if name is Work.PUBLISH:
                self.outbox.wake()
            else:
                self.wakeups[name].set()
        if self.forward is not None:
            self.forward(work)

    def changed(self, change: Change) -> None:
        self.wake(WORK_FOR[change])

    def can_take_download(self) -> bool:
        return len(self.handed_over) < self.download_slots

    def take_download(self, job: Job) -> None:
        self.hold([job])
        self.handed_over.append(job)
        self.wake(Work.FETCH)

    def hold(self, jobs: list[Job]) -> list[Job]:
        """Note claimed jobs as held by this process until `done`."""
        self.held_jobs.update((job.id, job.version) for job in jobs)
        return jobs

    def done(self, job: Job) -> None:
        """The work on `job` (as claimed) finished; a newer claim of the same job stays held."""
        if self.held_jobs.get(job.id) == job.version:
            del self.held_jobs[job.id]

    @contextmanager
    def answering_webhook(self) -> Iterator[None]:
        """Count a webhook being answered; background work defers to them (`defer_to_webhooks`)."""
        if self.webhooks_in_flight == 0:
            self.webhooks_idle = anyio.Event()
        self.webhooks_in_flight += 1
        try:
            yield
        finally:
            self.webhooks_in_flight -= 1
            if self.webhooks_in_flight == 0:
                self.webhooks_idle.set()

    async def defer_to_webhooks(self) -> None:
        """Acknowledgements first: while webhooks are being answered, wait (at most `MAX_DEFER_S`) before
        taking new background work. BFL retries a webhook only a few times; a result keeps for minutes."""
        if self.webhooks_in_flight:
            with anyio.move_on_after(MAX_DEFER_S):
                await self.webhooks_idle.wait()

    def stop(self) -> None:
        """Stop taking work: not ready any more, and every loop wakes up to notice."""
        if self.stopping.is_set():
            return
        self.ready = False
        self.stopped_at = time.monotonic()
        self.stopping.set()
        self.wake(*Work)
