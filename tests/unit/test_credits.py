"""Prices from the catalog, estimates before BFL says, the UTC day a credit cap counts, and which queued
edits fit within what is left of it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from receiver import lifecycle
from receiver.catalog import CATALOG, ModelSpec, Price
from receiver.credits import CreditBudget, allot, estimate, utc_day
from receiver.models import EditRequest, Job, JobState

T0 = datetime(2030, 1, 1, 22, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2030, 1, 2, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("model", "credits"),
    [
        ("flux-kontext-pro", 4.0),
        ("flux-kontext-max", 8.0),
        ("flux-2-pro", 4.5),
        ("flux-2-max", 10.0),
        ("flux-2-flex", 10.0),
        ("flux-2-klein-4b", 1.5),
        ("flux-2-klein-9b", 1.7),
    ],
)
def test_a_1_mp_edit_of_a_1_mp_image_costs_the_published_price(model: str, credits: float) -> None:
    assert CATALOG[model].credits(1.0, 1.0) == credits


def test_megapixel_prices_bill_further_output_and_every_input_megapixel() -> None:
    flux2_pro = CATALOG["flux-2-pro"]
    assert flux2_pro.credits(input_mp=3.0, output_mp=4.0) == 3.0 + 1.5 * (3.0 + 3.0)
    assert flux2_pro.credits(input_mp=0.5, output_mp=0.25) == 3.0 + 1.5 * 0.5  # the first MP is the base
    assert CATALOG["flux-kontext-max"].credits(input_mp=4.0, output_mp=1.0) == 8.0  # flat per edit


def test_an_estimate_uses_known_inputs_and_the_requested_size_within_the_cap() -> None:
    flex = CATALOG["flux-2-flex"]
    inline = EditRequest(prompt="p", model=flex.name, input_mp=2.0, width=2000, height=1500)
    by_url = EditRequest(prompt="p", model=flex.name)
    huge = EditRequest(prompt="p", model=flex.name, input_mp=1.0, width=4000, height=4000)

    assert estimate(flex, inline) == flex.credits(2.0, 3.0)
    assert estimate(flex, by_url, images=3) == flex.credits(3.0, 1.0)  # 1 MP per image by URL
    assert estimate(flex, huge) == flex.credits(1.0, 4.0)


def test_the_utc_day_starts_and_ends_at_midnight_utc() -> None:
    now = datetime(2030, 1, 1, 23, 59, 59, tzinfo=UTC).timestamp()
    start, end = utc_day(now)
    assert (start, end) == (
        datetime(2030, 1, 1, tzinfo=UTC).timestamp(),
        datetime(2030, 1, 2, tzinfo=UTC).timestamp(),
    )
    assert utc_day(end) == (end, end + 86_400)


def test_adding_a_model_is_one_entry_and_keeps_the_order() -> None:
    spec = ModelSpec("flux-x", "X", Price(2.0), 1, frozenset(), 5, ("png",), webhooks=False)
    extra = CATALOG.with_models(spec)
    assert list(extra) == [*CATALOG, "flux-x"]
    assert extra.default is CATALOG.default and extra["flux-x"].path == "/v1/flux-x"


def priced(*credits: float) -> tuple[CreditBudget, list[Job]]:
    """A budget of 10 credits for the day of T0, and queued jobs whose edits cost `credits` in turn."""
    jobs = [lifecycle.new_job(f"job-{n}", EditRequest(f"edit {n}"), T0) for n in range(len(credits))]
    costs = {job.id: cost for job, cost in zip(jobs, credits, strict=True)}
    return CreditBudget.of_day(10.0, T0, lambda job: costs[job.id]), jobs


def test_edits_that_fit_are_claimed_with_their_estimate_and_the_rest_held_until_midnight_utc() -> None:
    budget, jobs = priced(4.0, 4.0, 3.0, 1.0)

    allotment = budget.allot(3.0, jobs, T0, 60)

    # 3 + 4 = 7; + 4 would pass 10, + 3 reaches it; + 1 would pass it.
    assert [job.id for job in allotment.claimed] == ["job-0", "job-2"]
    assert [job.credit_estimate for job in allotment.claimed] == [4.0, 3.0]
    assert all(job.holds_upstream_slot(T0) and job.due_at == T0 + 60 for job in allotment.claimed)
    assert allotment.spent == 10.0
    assert [job.id for job in allotment.held] == ["job-1", "job-3"]
    first = allotment.held[0]
    assert (first.state, first.due_at, first.submitting_until) == (JobState.CREATED, MIDNIGHT, None)
    assert first.hold == {
        "code": "credit_cap",
        "message": "today's spend of 7 credits plus this edit's 4 would pass RECEIVER_MAX_CREDITS_PER_DAY=10;"
        " it waits for the next day (UTC)",
        "until": "2030-01-02T00:00:00.000Z",
    }
    assert not first.holds_upstream_slot(T0)


def test_once_the_cap_is_reached_even_the_cheapest_edit_waits() -> None:
    budget, jobs = priced(6.0, 0.5)
    allotment = budget.allot(4.0, jobs, T0, 60)
    assert ([job.id for job in allotment.claimed], allotment.spent) == (["job-0"], 10.0)
    assert [job.id for job in allotment.held] == ["job-1"]


def test_without_a_cap_every_due_edit_is_claimed_and_nothing_counted() -> None:
    _, jobs = priced(6.0, 0.5)
    allotment = allot(None, 0.0, jobs, T0, 60)
    assert [job.id for job in allotment.claimed] == ["job-0", "job-1"]
    assert all(job.holds_upstream_slot(T0) and job.credit_estimate is None for job in allotment.claimed)
    assert (allotment.held, allotment.spent) == ([], 0.0)
