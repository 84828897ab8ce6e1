"""Retention: finished jobs past `RECEIVER_RETENTION_DAYS` go, with their images, batch by batch."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver import lifecycle
from receiver.blobs import image_key, input_key
from receiver.blobs.local import LocalBlobStore
from receiver.models import ImageInfo, Job, JobState, StoredInput
from receiver.stores import DeliveryState, Store
from receiver.stores.sqlite import SQLiteStore
from receiver.worker.retention import purge_expired
from tests.contract.test_blob_contract import stream
from tests.contract.test_store_contract import POLICY, SINKS, T0, make_job

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with SQLiteStore(str(tmp_path / "receiver.db")) as store:
        yield store


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    async with LocalBlobStore(tmp_path / "images") as blobs:
        yield blobs


async def completed(store: Store, blobs: LocalBlobStore, job_id: str, created_at: float) -> Job:
    """A job with an input and a result in the blob store, published to every sink."""
    key = input_key(job_id, 0, "image/png")
    stored = await blobs.put(key, stream(b"input"), "image/png")
    inputs = (StoredInput(key, stored.sha256, stored.size, "image/png", 8, 8),)
    job = await store.insert(make_job(job_id, created_at, state=JobState.RECEIVED, inputs=inputs))
    result = await blobs.put(image_key(job_id, "image/jpeg"), stream(b"result"), "image/jpeg")
    image = ImageInfo(result.url, result.sha256, result.size, "image/jpeg", 8, 8)
    done = lifecycle.stored(job, image, created_at + 10, POLICY)
    assert done is not None
    saved = await store.save(done.job, event=done.event, sinks=SINKS)
    assert saved is not None
    for delivery in await store.deliveries(job_id):
        delivered = dataclasses.replace(delivery, state=DeliveryState.DELIVERED, attempts=1)
        assert await store.save_delivery(delivered, expected_attempts=0)
    return saved


def files(blobs: LocalBlobStore) -> list[str]:
    return sorted(path.name for path in blobs.root.iterdir())


async def test_purge_deletes_old_finished_jobs_and_their_images_in_batches(
    store: Store, blobs: LocalBlobStore
) -> None:
    for n in range(5):
        await completed(store, blobs, f"old-{n}", T0 + n)
    await completed(store, blobs, "new", T0 + 1000)
    in_flight = await store.insert(make_job("old-in-flight", T0))
    cutoff = T0 + 500

    assert await purge_expired(store, blobs, cutoff, batch=2) == 2
    assert await store.get("old-0") is None and await store.get("old-1") is None
    assert await store.event("old-0") is None and await store.deliveries("old-0") == []
    assert "old-0.jpg" not in files(blobs) and "old-0.input-0.png" not in files(blobs)
    assert await purge_expired(store, blobs, cutoff, batch=2) == 2
    assert await purge_expired(store, blobs, cutoff, batch=2) == 1
    assert await purge_expired(store, blobs, cutoff, batch=2) == 0

    assert files(blobs) == ["new.input-0.png", "new.jpg"]
    assert await store.get("new") is not None
    assert await store.get("old-in-flight") == in_flight


async def test_a_purge_cut_short_after_the_images_finishes_next_time(
    store: Store, blobs: LocalBlobStore
) -> None:
    """Images go before rows: rows left behind by a crash in between are purged by the next batch."""
    job = await completed(store, blobs, "old", T0)
    await blobs.delete([stored.key for stored in job.inputs] + [image_key(job.id, "image/jpeg")])
    assert await purge_expired(store, blobs, T0 + 500) == 1
    assert await store.get("old") is None and files(blobs) == []
