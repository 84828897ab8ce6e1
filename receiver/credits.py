"""Credits: what an edit is expected to cost before BFL says, the UTC day a daily cap counts, and which
queued edits fit within what is left of it. Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from receiver import lifecycle
from receiver.catalog import ModelSpec
from receiver.models import EditRequest, Job, isotime


def estimate(spec: ModelSpec, request: EditRequest, images: int = 1) -> float:
    """The credits an edit should cost: its input megapixels when known (1 MP per image given by URL),
    its output at width x height when both are set (capped), about 1 MP otherwise."""
    input_mp = request.input_mp if request.input_mp is not None else float(images)
    output_mp = 1.0
    if request.width and request.height:
        output_mp = request.width * request.height / 1_000_000
        if spec.max_output_mp is not None:
            output_mp = min(output_mp, spec.max_output_mp)
    return spec.credits(input_mp, round(output_mp, 2))


def utc_day(now: float) -> tuple[float, float]:
    """The start and end (epoch seconds) of the UTC day holding `now`."""
    moment = datetime.fromtimestamp(now, UTC)
    start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


@dataclass(frozen=True)
class Allotment:
    """Due jobs sorted by a credit budget: claimed for submit, held until the next day, and today's
    spend with the claimed ones."""

    claimed: list[Job]
    held: list[Job]
    spent: float


@dataclass(frozen=True)
class CreditBudget:
    """RECEIVER_MAX_CREDITS_PER_DAY as a submit claim applies it: `cap` credits in the UTC day
    [start, end), `estimate` being what a job's edit is expected to cost."""

    cap: float
    start: float
    end: float
    estimate: Callable[[Job], float]

    @classmethod
    def of_day(cls, cap: float, now: float, estimate: Callable[[Job], float]) -> CreditBudget:
        return cls(cap, *utc_day(now), estimate)

    def allot(self, spent: float, jobs: Sequence[Job], now: float, lease_s: float) -> Allotment:
        """`jobs` in turn, today's spend being `spent` (recorded, and claimed for a submit): one that
        fits is claimed for submit with its estimate, which then counts; one that would take the spend
        past the cap waits, saying why, until the next day."""
        claimed: list[Job] = []
        held: list[Job] = []
        for job in jobs:
            cost = self.estimate(job)
            if spent + cost <= self.cap:
                spent += cost
                claimed.append(job.claimed_for_submit(now, lease_s, cost))
                continue
            transition = lifecycle.held(job, self._reason(spent, cost), self.end)
            if transition is not None:
                held.append(transition.job)
        return Allotment(claimed, held, spent)

    def _reason(self, spent: float, cost: float) -> dict[str, Any]:
        return {
            "code": "credit_cap",
            "message": f"today's spend of {spent:g} credits plus this edit's {cost:g} would pass "
            f"RECEIVER_MAX_CREDITS_PER_DAY={self.cap:g}; it waits for the next day (UTC)",
            "until": isotime(self.end),
        }


def allot(
    budget: CreditBudget | None, spent: float, jobs: Sequence[Job], now: float, lease_s: float
) -> Allotment:
    """`budget.allot`, or with no cap every job claimed for submit."""
    if budget is None:
        return Allotment([job.claimed_for_submit(now, lease_s) for job in jobs], [], spent)
    return budget.allot(spent, jobs, now, lease_s)
