"""The room the account's active-task limits leave: pure arithmetic, and how active tasks are counted."""

from __future__ import annotations

import pytest

from receiver.models import EditRequest, Job, JobState
from receiver.stores import UpstreamLimits
from receiver.stores.rows import job_columns

PRO, MAX = "flux-kontext-pro", "flux-kontext-max"
MODELS = (PRO, MAX)
LIMITS = UpstreamLimits(24, MODELS, {MAX: 6})


@pytest.mark.parametrize(
    ("active", "free", "room"),
    [
        ({}, 24, {MAX: 6, PRO: 24}),
        ({PRO: 10}, 14, {MAX: 6, PRO: 14}),
        ({MAX: 6, PRO: 2}, 16, {MAX: 0, PRO: 16}),
        ({MAX: 4, PRO: 18}, 2, {MAX: 2, PRO: 2}),
        ({PRO: 24}, 0, {MAX: 0, PRO: 0}),
    ],
)
def test_room_per_model_within_the_total(active: dict[str, int], free: int, room: dict[str, int]) -> None:
    total_free, per_model = LIMITS.room(active)
    assert total_free == free
    assert dict(per_model) == room
    assert per_model[0][0] == MAX  # the model with its own quota first


def test_a_model_with_no_quota_of_its_own_shares_the_total() -> None:
    free, room = UpstreamLimits(8, MODELS).room({MAX: 3})
    assert free == 5 and dict(room) == {MAX: 5, PRO: 5}


def job(state: JobState, model: str = PRO, submitting_until: float | None = None) -> Job:
    return Job("j", EditRequest("p", model=model), 0.0, state=state, submitting_until=submitting_until)


def test_a_job_holds_an_upstream_slot_while_bfl_has_it_or_a_submit_claim_runs() -> None:
    now = 100.0
    jobs = [
        job(JobState.SUBMITTED, MAX),
        job(JobState.CREATED, submitting_until=now + 1),  # being submitted
        job(JobState.CREATED, MAX, submitting_until=now),  # its claim lapsed
        job(JobState.CREATED),  # queued
        job(JobState.RECEIVED, submitting_until=now + 1),  # a claim noted before the webhook won
    ]
    assert [j.holds_upstream_slot(now) for j in jobs] == [True, True, False, False, False]
    # The column the stores count on is set only while the job is created.
    assert [job_columns(j)[-1] for j in jobs] == [None, now + 1, now, None, None]
