"""The feed behind `GET /v1/events`: one contract for every job store, subclassed per backend."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from receiver.models import JobState
from receiver.stores import DeliveryState, Store, store_from_url
from receiver.stores.feed import DELIVERY_STATE, JOB_STATE
from receiver.stores.memory import MemoryStore
from receiver.stores.sqlite import SQLiteStore
from tests.contract.test_store_contract import SINKS, T0, final, make_job

pytestmark = pytest.mark.anyio


async def assert_a_write_wakes(reader: Store, writer: Store) -> None:
    changed = reader.feed_changed()
    await writer.insert(make_job("job-1"))
    with anyio.fail_after(5):
        await changed.wait()
    assert [e.job_id for e in await reader.feed(0)] == ["job-1"]


class FeedContract:
    async def test_a_jobs_life_in_order_with_its_event(self, store: Store) -> None:
        job = await store.insert(make_job("job-1"))
        claimed = await store.claim([JobState.CREATED], T0, 30, 1)  # no state change: not in the feed
        transition = final(claimed[0])
        await store.save(transition.job, event=transition.event, sinks=SINKS)
        [delivery, _] = await store.deliveries(job.id)
        dead = dataclasses.replace(delivery, state=DeliveryState.DEAD, last_error="gone")
        assert await store.save_delivery(dead, expected_attempts=0)

        entries = await store.feed(0)
        assert [(e.type, e.state, e.sink) for e in entries] == [
            (JOB_STATE, "created", None),
            (JOB_STATE, "failed", None),
            ("kontext.edit.failed", None, None),
            (DELIVERY_STATE, "dead", delivery.sink),
        ]
        assert all(e.job_id == "job-1" for e in entries)
        seqs = [e.seq for e in entries]
        assert seqs == sorted(seqs) and len(set(seqs)) == 4
        assert transition.event is not None and entries[2].event == transition.event.to_dict()
        assert entries[2].data() == transition.event.to_dict()
        assert entries[3].data() == {"job_id": "job-1", "state": "dead", "sink": delivery.sink}
        assert await store.feed(seqs[1]) == entries[2:]
        assert await store.feed_head() == seqs[-1]

    async def test_an_empty_feed(self, store: Store) -> None:
        assert await store.feed(0) == [] and await store.feed_head() == 0

    async def test_filters_and_limit(self, store: Store) -> None:
        for job_id in ("job-a", "job-b", "job-c"):
            job = await store.insert(make_job(job_id))
            transition = final(job)
            await store.save(transition.job, event=transition.event, sinks=SINKS)
        assert [e.state for e in await store.feed(0, job_id="job-b")] == ["created", "failed", None]
        events = await store.feed(0, types=["kontext.edit.failed"])
        assert [e.job_id for e in events] == ["job-a", "job-b", "job-c"]
        assert [e.job_id for e in await store.feed(0, types=[JOB_STATE], limit=2)] == ["job-a", "job-a"]
        assert await store.feed(0, job_id="job-b", types=[DELIVERY_STATE]) == []

    async def test_deleted_jobs_leave_the_feed_and_numbering_goes_on(self, store: Store) -> None:
        for job_id in ("job-a", "job-b"):
            await store.insert(make_job(job_id))
        head = await store.feed_head()
        assert await store.delete_jobs(["job-a"]) == 1
        assert [e.job_id for e in await store.feed(0)] == ["job-b"]
        await store.insert(make_job("job-c"))
        [entry] = await store.feed(head)
        assert entry.job_id == "job-c" and entry.seq > head

    async def test_a_write_that_grows_the_feed_wakes_readers(self, store: Store) -> None:
        await assert_a_write_wakes(store, store)

    async def test_overview(self, store: Store) -> None:
        await store.insert(make_job("job-a"))
        job = await store.insert(make_job("job-b"))
        transition = final(job)
        await store.save(transition.job, event=transition.event, sinks=SINKS)
        [delivery, _] = await store.deliveries("job-b")
        dead = dataclasses.replace(delivery, state=DeliveryState.DEAD)
        assert await store.save_delivery(dead, expected_attempts=0)
        [entry] = await store.feed(0, types=["kontext.edit.failed"])

        overview = await store.overview(entry.at + 1)
        assert overview.jobs_per_state["created"] == 1 and overview.jobs_per_state["failed"] == 1
        assert overview.jobs_per_state["published"] == 0
        assert overview.events_last_minute == 1
        assert overview.dead_letters == 1
        assert overview.oldest_undelivered == dict.fromkeys(SINKS, transition.job.finished_at)
        assert (await store.overview(entry.at + 61)).events_last_minute == 0


class TestMemoryFeed(FeedContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        async with MemoryStore() as store:
            yield store


class TestSQLiteFeed(FeedContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        async with SQLiteStore(str(tmp_path / "receiver.db")) as store:
            yield store

    async def test_a_write_by_another_process_wakes_readers(self, tmp_path: Path) -> None:
        path = str(tmp_path / "receiver.db")  # two stores on one file, as `serve --processes N` has
        async with SQLiteStore(path) as writer, SQLiteStore(path) as reader:
            await assert_a_write_wakes(reader, writer)


class TestPostgresFeed(FeedContract):
    @pytest.fixture
    async def store(self, postgres_schema_url: str) -> AsyncIterator[Store]:
        async with store_from_url(postgres_schema_url) as store:
            yield store

    async def test_a_write_on_one_replica_wakes_another(self, postgres_schemas: Callable[[], str]) -> None:
        url = postgres_schemas()
        async with store_from_url(url) as writer, store_from_url(url) as reader:
            await assert_a_write_wakes(reader, writer)

    async def test_a_row_committed_late_is_numbered_after_what_was_read(
        self, postgres_schemas: Callable[[], str]
    ) -> None:
        import asyncpg

        url = postgres_schemas()
        async with store_from_url(url) as store:
            schema = url.rpartition("schema=")[2]
            conn = await asyncpg.connect(url.partition("?")[0], server_settings={"search_path": schema})
            try:
                late = conn.transaction()
                await late.start()
                await conn.execute(  # its feed row gets the lower id, but commits last
                    "INSERT INTO jobs (id, state, model, version, created_at, doc)"
                    " VALUES ('late', 'created', 'flux-kontext-pro', 0, 0, '{}')"
                )
                await store.insert(make_job("early"))
                [early] = await store.feed(0)
                assert early.job_id == "early"
                await late.commit()
            finally:
                await conn.close()
            assert [e.job_id for e in await store.feed(early.seq)] == ["late"]
