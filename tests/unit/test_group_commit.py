"""The group commit's lines carry the job they are about, never that of whichever caller started the
batch. Pure logic: the commit, the run alone and the step are made up, and note the log context they
ran in."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
import structlog

from receiver import lifecycle
from receiver.logs import about_job
from receiver.models import EditRequest, Job, Transition
from receiver.stores.postgres_batch import GroupCommit, RunAlone, Update, _step, _Writes

pytestmark = pytest.mark.anyio

JOBS = ("a", "b", "c")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """A batch's commit and run alone that note the log context each ran in, the commit failing on a
    conflict when told to."""

    def __init__(self, *, conflict: bool) -> None:
        self.conflict = conflict
        self.committed: list[dict[str, Any]] = []
        self.alone: dict[str, dict[str, Any]] = {}

    async def commit(self, batch: list[str]) -> Sequence[str]:
        self.committed.append(structlog.contextvars.get_contextvars())
        if self.conflict:
            raise RunAlone
        return batch

    async def run_alone(self, job_id: str) -> str:
        self.alone[job_id] = structlog.contextvars.get_contextvars()
        return job_id


async def three_callers(*, conflict: bool) -> Recorder:
    """Three callers, each in its own job's log context, whose updates arrive together."""
    recorder = Recorder(conflict=conflict)
    batcher = GroupCommit(recorder.commit, recorder.run_alone, lambda job_id: job_id)

    async def run_as(job_id: str) -> None:
        with about_job(job_id, f"task-{job_id}"):
            assert await batcher.run(job_id) == job_id
            assert structlog.contextvars.get_contextvars() == {
                "job_id": job_id,
                "bfl_task_id": f"task-{job_id}",
            }

    async with anyio.create_task_group() as tg:
        for job_id in JOBS:
            tg.start_soon(run_as, job_id)
    assert batcher.committed == (0 if conflict else len(recorder.committed))
    return recorder


async def test_a_batch_runs_with_no_callers_job_context() -> None:
    recorder = await three_callers(conflict=False)
    assert recorder.committed and all(context == {} for context in recorder.committed)


async def test_an_item_run_alone_names_its_own_job() -> None:
    recorder = await three_callers(conflict=True)
    assert recorder.alone == {job_id: {"job_id": job_id} for job_id in JOBS}


def test_a_jobs_step_in_a_batch_runs_in_that_jobs_log_context() -> None:
    job = dataclasses.replace(lifecycle.new_job("b", EditRequest(prompt="edit"), 0.0), bfl_task_id="task-b")
    seen: list[dict[str, Any]] = []

    def change(current: Job) -> Transition | None:
        seen.append(structlog.contextvars.get_contextvars())
        return None

    _step(Update("b", change, (), None), {"b": job}, _Writes())
    assert seen == [{"job_id": "b", "bfl_task_id": "task-b"}]
