"""Credits: what an edit is expected to cost before BFL says, and the UTC day a daily cap counts. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from receiver.catalog import ModelSpec
from receiver.models import EditRequest


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
