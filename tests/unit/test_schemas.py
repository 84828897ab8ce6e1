"""The API's request models: BFL's error shape, every problem at once, and the inputs that once
answered 500."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from receiver.bfl.validation import OUTPUT_FORMATS
from receiver.errors import InvalidRequest
from receiver.models import Model
from receiver.web.schemas import JobQuery, JobsQuery, OutputFormat, parse_edit_body, validate
from tests.images import base64_image

IMAGE = base64_image("PNG", (32, 24))
VALID = {"prompt": "Change the car color to red", "image": IMAGE}


def problems(payload: Any) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        parse_edit_body(payload)
    return {".".join(map(str, p.loc)): p.type for p in caught.value.problems}


@pytest.mark.parametrize("model", [[], {}, 1, None, True, ["flux-kontext-pro"]])
def test_an_unhashable_or_odd_model_is_a_field_problem(model: Any) -> None:
    assert problems(VALID | {"model": model}) == {"body.model": "enum"}


@pytest.mark.parametrize("payload", [[], "text", 3, None, [VALID]])
def test_a_body_that_is_not_an_object(payload: Any) -> None:
    assert problems(payload) == {"body": "dict_type"}


def test_every_problem_at_once_with_loc_msg_type() -> None:
    found = problems({"prompt": " ", "image": "!!", "seed": "1", "safety_tolerance": 9, "extra": 1})
    assert found == {
        "body.prompt": "string_too_short",
        "body.image": "image_invalid",
        "body.seed": "int_type",
        "body.safety_tolerance": "less_than_equal",
        "body.extra": "extra_forbidden",
    }


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"image": None}, "body.image"),
        ({"image_url": "https://images.example/a.png"}, "body.image_url"),
        ({"image": None, "image_url": None}, "body.image"),
        ({"image": 5}, "body.image"),
    ],
)
def test_exactly_one_image_is_given(change: dict[str, Any], where: str) -> None:
    assert where in problems(VALID | change)


def test_no_image_at_all() -> None:
    assert problems({"prompt": "p"}) == {"body.image": "missing"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", True),
        ("seed", 1.5),
        ("seed", -1),
        ("seed", 2**63),
        ("prompt_upsampling", "true"),
        ("aspect_ratio", "7:2"),
        ("aspect_ratio", "16:9\n"),
        ("output_format", "webp"),
        ("metadata", {"big": "x" * 17_000}),
        ("metadata", []),
    ],
)
def test_field_limits(field: str, value: Any) -> None:
    assert f"body.{field}" in problems(VALID | {field: value})


def test_valid_body_becomes_the_jobs_request() -> None:
    body = parse_edit_body(VALID | {"model": "flux-kontext-max", "seed": 7.0, "aspect_ratio": "16:9"})
    request = body.to_request()
    assert (request.model, request.seed, request.aspect_ratio) == (Model.MAX, 7, "16:9")
    assert isinstance(request.seed, int)
    assert body.image is not None and (body.image.content_type, body.image.width) == ("image/png", 32)


def test_url_input_needs_http_and_no_spaces() -> None:
    assert parse_edit_body({"prompt": "p", "image": None, "image_url": "https://a.example/x.png"}).image_url
    assert problems({"prompt": "p", "image_url": "https://a.example/x y.png"}) == {
        "body.image_url": "url_scheme"
    }


def test_output_formats_match_the_shared_limits() -> None:
    assert get_args(OutputFormat) == OUTPUT_FORMATS


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ({"state": "bogus"}, "query.state"),
        ({"delivery": "live"}, "query.delivery"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "1.5"}, "query.limit"),
        ({"offset": "-1"}, "query.offset"),
    ],
)
def test_jobs_query_limits(query: dict[str, str], where: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate(JobsQuery, query, "query")
    assert {".".join(map(str, p.loc)) for p in caught.value.problems} == {where}


@pytest.mark.parametrize("wait", ["nan", "inf", "-1", "61", "soon"])
def test_wait_is_a_finite_number_within_bounds(wait: str) -> None:
    with pytest.raises(InvalidRequest):
        validate(JobQuery, {"wait": wait}, "query")
    assert validate(JobQuery, {"wait": "2.5", "other": "x"}, "query").wait == 2.5
