"""What a process opens once: the store, blobs, sinks, HTTP clients, the BFL client, the signer and the
policies. Immutable and shared by the HTTP app and the background work; the worker's scheduling state
lives apart, in `receiver.worker.scheduler`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from receiver.bfl.client import BflClient
from receiver.bfl.sansio import SAMPLE_URL_LIFETIME_S
from receiver.bfl.validation import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from receiver.blobs import BlobStore, blobs_from_url
from receiver.catalog import CATALOG, Catalog
from receiver.downloads import FetchPolicy, download_client
from receiver.errors import ReceiverError, StartupError
from receiver.hosts import INPUT_HOSTS
from receiver.http_transport import BackpressureTransport
from receiver.lifecycle import Policy
from receiver.metrics import Metrics, Step
from receiver.models import FINAL_STATES, Job, Transition
from receiver.registry import redact
from receiver.settings import Settings
from receiver.sinks import Sink, sinks_from_settings
from receiver.stores import Store, store_from_url
from receiver.stores.guard import guarded
from receiver.webhook_auth import WebhookSigner

Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    blobs: BlobStore
    sinks: Mapping[str, Sink]
    bfl: BflClient
    http: httpx.AsyncClient  # to BFL's API
    downloads: httpx.AsyncClient  # to the hosts results are downloaded from (see `download_client`)
    input_downloads: httpx.AsyncClient  # to the hosts input images given by URL are downloaded from
    signer: WebhookSigner
    policy: Policy
    fetch_policy: FetchPolicy
    input_policy: FetchPolicy
    clock: Clock = time.time
    metrics: Metrics = field(default_factory=Metrics)
    catalog: Catalog = field(default_factory=lambda: CATALOG)

    def webhook_url(self, job_id: str) -> str:
        return f"{self.settings.public_url}/webhooks/bfl/{job_id}"

    async def update(
        self, job_id: str, change: Callable[[Job], Transition | None], *, claimed_until: float | None = None
    ) -> tuple[Job | None, bool]:
        """Apply a lifecycle step to the job (see `Store.update`); an event it emits is queued for
        every configured sink (already claimed by the caller, with `claimed_until`); the state change,
        and the credits of a job that reached its outcome, are counted."""
        step = Step(change)
        job, changed = await self.store.update(job_id, step, list(self.sinks), claimed_until=claimed_until)
        if changed:
            self.metrics.count(step)
            if job is not None and step.states is not None and step.states[0] not in FINAL_STATES:
                self.metrics.count_credits(job)
        return job, changed


def event_source(settings: Settings) -> str:
    return settings.public_url or "urn:kontext-receiver"


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    store: Store | None = None,
    blobs: BlobStore | None = None,
    sinks: list[Sink] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock = time.time,
    catalog: Catalog = CATALOG,
) -> AsyncIterator[Services]:
    """Open every resource the settings name (or use the ones given) and close them all on exit. One
    that cannot be opened raises `StartupError`; a malformed URL, `ConfigError`."""
    async with AsyncExitStack() as stack:
        store = store or store_from_url(settings.store_url)
        blobs = blobs or blobs_from_url(settings.blob_url)
        sinks = sinks or sinks_from_settings(settings)
        opened_store = guarded(
            await _open(stack, store, f"the job store {redact(settings.store_url)}"),
            settings.store_timeout_s,
        )
        opened_blobs = await _open(stack, blobs, f"the blob store {redact(settings.blob_url)}")
        opened_sinks = [await _open(stack, sink, f"sink {sink.name}") for sink in sinks]
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
        input_policy = FetchPolicy(
            allowed_hosts=settings.input_hosts,
            max_bytes=MAX_IMAGE_BYTES,  # what a base64 input may be
            max_pixels=MAX_IMAGE_PIXELS,
            setting=INPUT_HOSTS,
            what="input image",
        )
        input_downloads = await stack.enter_async_context(
            download_client(input_policy, httpx.Timeout(settings.input_fetch_timeout_s), limits, transport)
        )
        yield Services(
            settings=settings,
            store=opened_store,
            blobs=opened_blobs,
            sinks={sink.name: sink for sink in opened_sinks},
            bfl=BflClient(http, settings.bfl_api_url, settings.bfl_api_key),
            http=http,
            downloads=downloads,
            input_downloads=input_downloads,
            signer=WebhookSigner(settings.signing_keys),
            policy=Policy(
                source=event_source(settings),
                reconcile_after_s=settings.reconcile_after_s,
                give_up_after_s=settings.give_up_after_s,
                retry_base_s=settings.retry_base_s,
                lease_s=settings.lease_s,
                # A result reported ready late keeps its URL's 10 minutes, unless giving up comes sooner.
                received_grace_s=min(SAMPLE_URL_LIFETIME_S, settings.give_up_after_s),
            ),
            fetch_policy=fetch_policy,
            input_policy=input_policy,
            clock=clock,
            catalog=catalog,
            metrics=Metrics(settings.metrics_store_ttl_s),
        )


async def _open(stack: AsyncExitStack, resource: AbstractAsyncContextManager[T], what: str) -> T:
    try:
        return await stack.enter_async_context(resource)
    except ReceiverError as exc:  # the backend's message names what failed, its secrets left out
        raise StartupError(str(exc)) from exc
    except Exception as exc:
        raise StartupError(f"cannot open {what}: {type(exc).__name__}: {exc}") from exc
