"""A job whose handling raises does not hold up the others in its batch, is retried alone with backoff,
and still reaches its deadline and its final event. The worker steps run for real on the in-memory
store; only BFL's side is made up (httpx MockTransport)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import pytest

from receiver.blobs.memory import MemoryBlobStore
from receiver.models import EditRequest, Job, JobState
from receiver.services import Services, open_services
from receiver.settings import Settings
from receiver.sinks.file import FileSink
from receiver.stores.memory import MemoryStore
from receiver.worker.pipeline import fetch_and_store
from receiver.worker.reconciler import reconcile_due
from receiver.worker.scheduler import Scheduler
from receiver.worker.submitter import Submitter
from tests.clock import FakeClock
from tests.images import encode_image

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
BFL = "http://127.0.0.1:9"  # never dialled: the MockTransport answers
SAMPLE = "http://127.0.0.1:9/sample.png"
GIVE_UP_S = 600.0
PNG = encode_image("PNG", (16, 16))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def bfl(request: httpx.Request) -> httpx.Response:
    if request.url.path.startswith("/v1/flux-kontext"):
        if b"poison" in request.content:
            raise RuntimeError("a client library bug")
        return httpx.Response(200, json={"id": "task-" + request.content.decode()[-8:], "polling_url": None})
    if request.url.path == "/poison.png":
        raise RuntimeError("a client library bug")
    if request.url.path.endswith(".png"):
        return httpx.Response(200, content=PNG)
    if request.url.params.get("id") == "poison":
        raise RuntimeError("a client library bug")
    task_id = request.url.params.get("id")
    return httpx.Response(200, json={"id": task_id, "status": "Ready", "result": {"sample": SAMPLE}})


@pytest.fixture
async def services(tmp_path: anyio.Path) -> AsyncIterator[tuple[Services, FakeClock]]:
    clock = FakeClock(T0)
    settings = Settings(
        bfl_api_url=BFL,
        bfl_api_key="key",
        signing_keys=("signing-key-for-tests",),
        give_up_after_s=GIVE_UP_S,
        reconcile_after_s=0.0,
        sample_hosts=("127.0.0.1",),
        demo=True,
    )
    async with open_services(
        settings,
        store=MemoryStore(),
        blobs=MemoryBlobStore(),
        sinks=[FileSink(tmp_path / "events.jsonl")],  # type: ignore[arg-type]
        transport=httpx.MockTransport(bfl),
        clock=clock,
    ) as svc:
        yield svc, clock


async def add(svc: Services, job_id: str, prompt: str = "edit", **fields: object) -> Job:
    job = Job(id=job_id, request=EditRequest(prompt, image_url=SAMPLE), created_at=T0, due_at=T0)
    return await svc.store.insert(dataclasses.replace(job, **fields))  # type: ignore[arg-type]


async def state(svc: Services, job_id: str) -> JobState:
    job = await svc.store.get(job_id)
    assert job is not None
    return job.state


async def test_a_poll_that_raises_does_not_stop_the_batch_and_the_job_still_expires(
    services: tuple[Services, FakeClock],
) -> None:
    svc, clock = services
    for job_id in ("poison", "a", "b"):
        await add(svc, job_id, state=JobState.SUBMITTED, bfl_task_id=job_id, submitted_at=T0)
    sched = Scheduler.for_services(svc)

    assert await reconcile_due(svc, sched) == 3
    assert [await state(svc, j) for j in ("a", "poison", "b")] == [
        JobState.RECEIVED,
        JobState.SUBMITTED,
        JobState.RECEIVED,
    ]
    poisoned = await svc.store.get("poison")
    assert poisoned is not None and poisoned.due_at is not None and T0 < poisoned.due_at < T0 + 60
    assert not sched.held_jobs  # every claim given back
    crashes = svc.metrics.registry.get_sample_value(
        "kontext_receiver_job_step_crashes_total", {"stage": "reconcile"}
    )
    assert crashes == 1

    clock.advance(GIVE_UP_S + 1)
    assert await reconcile_due(svc, sched) == 1
    assert await state(svc, "poison") is JobState.EXPIRED
    event = await svc.store.event("poison")
    assert event is not None and event.type == "kontext.edit.expired"
    assert event.data["error"]["code"] == "internal_error"


async def test_a_submit_that_raises_is_retried_alone_then_fails_at_the_deadline(
    services: tuple[Services, FakeClock],
) -> None:
    svc, clock = services
    for job_id, prompt in [("a", "edit a"), ("poison", "poison"), ("b", "edit b")]:
        await add(svc, job_id, prompt)
    sched = Scheduler.for_services(svc)

    async def step_until_idle() -> None:
        async with anyio.create_task_group() as tg:
            await Submitter(svc, sched, tg).step()

    await step_until_idle()
    assert [await state(svc, j) for j in ("a", "poison", "b")] == [
        JobState.SUBMITTED,
        JobState.CREATED,
        JobState.SUBMITTED,
    ]
    assert not sched.held_jobs
    clock.advance(GIVE_UP_S + 1)
    await step_until_idle()
    assert await state(svc, "poison") is JobState.FAILED
    event = await svc.store.event("poison")
    assert event is not None and event.type == "kontext.edit.failed"


Step = Callable[[], object]


async def test_a_fetch_that_raises_is_retried_alone_then_expires(
    services: tuple[Services, FakeClock],
) -> None:
    svc, clock = services
    sched = Scheduler.for_services(svc)
    for job_id in ("poison", "a"):
        await add(
            svc,
            job_id,
            state=JobState.RECEIVED,
            bfl_task_id=job_id,
            submitted_at=T0,
            received_at=T0,
            sample_url=f"http://127.0.0.1:9/{job_id}.png",
        )
    for job in await svc.store.claim({JobState.RECEIVED}, clock(), svc.policy.lease_s, 10):
        await fetch_and_store(svc, sched, job)
    assert [await state(svc, j) for j in ("poison", "a")] == [JobState.RECEIVED, JobState.STORED]

    clock.advance(GIVE_UP_S + 1)
    (job,) = await svc.store.claim({JobState.RECEIVED}, clock(), svc.policy.lease_s, 10)
    await fetch_and_store(svc, sched, job)
    assert await state(svc, "poison") is JobState.EXPIRED
