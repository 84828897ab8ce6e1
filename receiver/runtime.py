"""Everything a running receiver holds: its resources, opened once, and the signals between its loops."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import anyio
import httpx

from receiver.bfl.client import BflClient
from receiver.blobs import BlobStore, blobs_from_url
from receiver.http_transport import BackpressureTransport
from receiver.lifecycle import Policy
from receiver.metrics import Metrics
from receiver.models import Job, Transition
from receiver.settings import Settings
from receiver.sinks import Sink, sinks_from_urls
from receiver.stores import Delivery, Store, store_from_url
from receiver.webhook_auth import WebhookSigner
from receiver.worker.budget import PollBudget
from receiver.downloads import FetchPolicy, download_client
from receiver.worker.wakeup import Wakeup

Clock = Callable[[], float]

MAX_DEFER_S = 0.05


@dataclass
class Wakeups:
    submit: Wakeup = field(default_factory=Wakeup)
    fetch: Wakeup = field(default_factory=Wakeup)
    publish: Wakeup = field(default_factory=Wakeup)
    reconcile: Wakeup = field(default_factory=Wakeup)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    blobs: BlobStore
    sinks: dict[str, Sink]
    bfl: BflClient
    http: httpx.AsyncClient  # to BFL's API
    downloads: httpx.AsyncClient  # to the hosts results are downloaded from (see `download_client`)
    signer: WebhookSigner
    policy: Policy
    fetch_policy: FetchPolicy
    poll_budget: PollBudget
    clock: Clock = time.time
    wakeups: Wakeups = field(default_factory=Wakeups)
    metrics: Metrics = field(default_factory=Metrics)
    ready: bool = True
    stopping: anyio.Event = field(default_factory=anyio.Event)
    stopped_at: float | None = None  # event-loop time of `stop()`
    # Work this process has claimed and not finished, released at shutdown so nobody waits out a lease.
    held_jobs: dict[str, int] = field(default_factory=dict)  # job id -> version when claimed
    held_deliveries: dict[tuple[str, str], Delivery] = field(default_factory=dict)

    # Received jobs a webhook handed straight to this process's downloads (claimed, so no store scan).
    handed_over: deque[Job] = field(default_factory=deque)
    webhooks_in_flight: int = 0
    webhooks_idle: anyio.Event = field(default_factory=anyio.Event)

    def webhook_url(self, job_id: str) -> str:
        return f"{self.settings.public_url}/webhooks/bfl/{job_id}"

    async def update(
        self, job_id: str, change: Callable[[Job], Transition | None], *, claimed_until: float | None = None
    ) -> tuple[Job | None, bool]:
        """Apply a lifecycle step to the job (see `Store.update`); an event it emits is queued for
        every configured sink (already claimed by the caller, with `claimed_until`)."""
        return await self.store.update(job_id, change, list(self.sinks), claimed_until=claimed_until)

    def can_take_download(self) -> bool:
        """Room to take a received job straight into this process's downloads."""
        return len(self.handed_over) < self.settings.download_concurrency

    def take_download(self, job: Job) -> None:
        self.hold([job])
        self.handed_over.append(job)
        self.wakeups.fetch.set()

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
        self.stopped_at = anyio.current_time()
        self.stopping.set()
        for wakeup in (self.wakeups.submit, self.wakeups.fetch, self.wakeups.publish, self.wakeups.reconcile):
            wakeup.set()


def event_source(settings: Settings) -> str:
    return settings.public_url or "urn:kontext-receiver"


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    store: Store | None = None,
    blobs: BlobStore | None = None,
    sinks: list[Sink] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock = time.time,
) -> AsyncIterator[Runtime]:
    """Open every resource the settings name (or use the ones given) and close them all on exit."""
    async with AsyncExitStack() as stack:
        opened_store = await stack.enter_async_context(store or store_from_url(settings.store_url))
        opened_blobs = await stack.enter_async_context(blobs or blobs_from_url(settings.blob_url))
        opened_sinks = [
            await stack.enter_async_context(sink) for sink in sinks or sinks_from_urls(settings.sinks)
        ]
        timeout = httpx.Timeout(30.0, read=settings.download_timeout_s)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        fetch_policy = FetchPolicy(
            allowed_hosts=settings.sample_hosts,
            max_bytes=settings.max_sample_bytes,
            max_pixels=settings.max_sample_pixels,
        )
        http = await stack.enter_async_context(
            httpx.AsyncClient(
                timeout=timeout, transport=transport or BackpressureTransport(limits), follow_redirects=False
            )
        )
        downloads = await stack.enter_async_context(download_client(fetch_policy, timeout, limits, transport))
        yield Runtime(
            settings=settings,
            store=opened_store,
            blobs=opened_blobs,
            sinks={sink.name: sink for sink in opened_sinks},
            bfl=BflClient(http, settings.bfl_api_url, settings.bfl_api_key),
            http=http,
            downloads=downloads,
            signer=WebhookSigner(settings.signing_keys),
            policy=Policy(
                source=event_source(settings),
                reconcile_after_s=settings.reconcile_after_s,
                give_up_after_s=settings.give_up_after_s,
                retry_base_s=settings.retry_base_s,
                lease_s=settings.lease_s,
                # A result reported ready late keeps its URL's 10 minutes, unless giving up comes sooner.
                received_grace_s=min(600.0, settings.give_up_after_s),
            ),
            fetch_policy=fetch_policy,
            poll_budget=PollBudget(settings.max_polls_per_s),
            clock=clock,
        )
