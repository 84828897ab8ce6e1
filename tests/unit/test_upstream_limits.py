"""The room the account's active-task limits leave: pure arithmetic, and how active tasks are counted."""

from __future__ import annotations

import pytest

from receiver.models import EditRequest, Job, JobState, Model
from receiver.stores import UpstreamLimits
from receiver.stores.rows import job_columns

LIMITS = UpstreamLimits(24, {Model.MAX: 6})


@pytest.mark.parametrize(
    ("active", "free", "room"),
    [
        ({}, 24, {Model.MAX: 6, Model.PRO: 24}),
        ({Model.PRO: 10}, 14, {Model.MAX: 6, Model.PRO: 14}),
        ({Model.MAX: 6, Model.PRO: 2}, 16, {Model.MAX: 0, Model.PRO: 16}),
        ({Model.MAX: 4, Model.PRO: 18}, 2, {Model.MAX: 2, Model.PRO: 2}),
        ({Model.PRO: 24}, 0, {Model.MAX: 0, Model.PRO: 0}),
    ],
)
def test_room_per_model_within_the_total(active: dict[Model, int], free: int, room: dict[Model, int]) -> None:
    total_free, per_model = LIMITS.room(active)
    assert total_free == free
    assert dict(per_model) == room
    assert per_model[0][0] is Model.MAX  # the model with its own quota first


def test_a_model_with_no_quota_of_its_own_shares_the_total() -> None:
    free, room = UpstreamLimits(8).room({Model.MAX: 3})
    assert free == 5 and dict(room) == {Model.MAX: 5, Model.PRO: 5}


def job(state: JobState, model: Model = Model.PRO, submitting_until: float | None = None) -> Job:
    return Job("j", EditRequest("p", model=model), 0.0, state=state, submitting_until=submitting_until)


def test_a_job_holds_an_upstream_slot_while_bfl_has_it_or_a_submit_claim_runs() -> None:
    now = 100.0
    jobs = [
        job(JobState.SUBMITTED, Model.MAX),
        job(JobState.CREATED, submitting_until=now + 1),  # being submitted
        job(JobState.CREATED, Model.MAX, submitting_until=now),  # its claim lapsed
        job(JobState.CREATED),  # queued
        job(JobState.RECEIVED, submitting_until=now + 1),  # a claim noted before the webhook won
    ]
    assert [j.holds_upstream_slot(now) for j in jobs] == [True, True, False, False, False]
    # The column the stores count on is set only while the job is created.
    assert [job_columns(j)[-1] for j in jobs] == [None, now + 1, now, None, None]
