"""Prices from the catalog, estimates before BFL says, and the UTC day a credit cap counts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from receiver.catalog import CATALOG, ModelSpec, Price
from receiver.credits import estimate, utc_day
from receiver.models import EditRequest


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
