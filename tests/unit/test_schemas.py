"""The API's request models: BFL's error shape, every problem at once, and the inputs that once
answered 500."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from receiver.catalog import CATALOG
from receiver.errors import InvalidRequest
from receiver.models import StoredInput
from receiver.web.schemas import EDIT_BODIES, EditBody, JobQuery, JobsQuery, validate
from tests.images import base64_image

parse_edit_body = EDIT_BODIES.parse

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
    request = body.to_request([StoredInput("k", "sha", 10, "image/png", 32, 32)])
    assert (request.model, request.seed, request.aspect_ratio) == ("flux-kontext-max", 7, "16:9")
    assert isinstance(request.seed, int)
    assert body.image is not None and (body.image.content_type, body.image.width) == ("image/png", 32)


def test_url_input_needs_http_and_no_spaces() -> None:
    assert parse_edit_body({"prompt": "p", "image": None, "image_url": "https://a.example/x.png"}).image_url
    assert problems({"prompt": "p", "image_url": "https://a.example/x y.png"}) == {
        "body.image_url": "url_scheme"
    }


def output_formats(body: type[EditBody]) -> tuple[str, ...]:
    annotation = body.model_fields["output_format"].annotation
    (formats,) = (arg for arg in get_args(annotation) if arg is not type(None))
    return get_args(formats)


def test_each_models_body_takes_what_the_catalog_says() -> None:
    for name, spec in CATALOG.items():
        body = EDIT_BODIES.by_model[name]
        assert output_formats(body) == spec.output_formats
        assert {
            key
            for key in ("aspect_ratio", "width", "height", "steps", "guidance", "prompt_upsampling")
            if key in body.model_fields
        } == set(spec.fields)


@pytest.mark.parametrize(
    ("change", "found"),
    [
        ({"model": "flux-2-pro", "steps": 20}, {"body.steps": "model_field"}),
        ({"model": "flux-kontext-pro", "width": 512}, {"body.width": "model_field"}),
        (
            {"model": "flux-2-klein-9b", "image": None, "images": [IMAGE] * 5},
            {"body.images": "too_many_images"},
        ),
        ({"model": "flux-2-pro", "width": 1000}, {"body.width": "side"}),
        ({"model": "flux-2-pro", "width": 4096, "height": 2048}, {"body.width": "output_too_large"}),
        ({"model": "flux-2-pro", "safety_tolerance": 6}, {"body.safety_tolerance": "less_than_equal"}),
        ({"model": "flux-2-flex", "guidance": 10.5}, {"body.guidance": "less_than_equal"}),
        ({"model": "flux-9"}, {"body.model": "enum"}),
        ({"images": [IMAGE]}, {"body.images": "extra_forbidden"}),
        ({"image": None, "images": []}, {"body.images": "too_short"}),
        ({"image": None, "images": ["!!"]}, {"body.images.0": "image_invalid"}),
    ],
)
def test_what_a_model_does_not_take_is_refused_for_that_model(
    change: dict[str, Any], found: dict[str, str]
) -> None:
    assert problems(VALID | change) == found


def test_images_keep_their_order_base64_and_urls_mixed() -> None:
    url = "https://images.example/ref.png"
    body = parse_edit_body({"prompt": "p", "model": "flux-2-flex", "images": [IMAGE, url, IMAGE], "steps": 4})
    assert [type(image).__name__ for image in body.inputs] == ["InputImage", "str", "InputImage"]
    assert [loc for loc, _ in body.input_fields] == [("body", "images", n) for n in range(3)]
    assert body.input_fields[1][1] == url


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({}, ("body", "image")),
        ({"image": None, "image_url": "https://a.example/x.png"}, ("body", "image_url")),
    ],
)
def test_a_single_input_is_named_by_its_field(change: dict[str, Any], where: tuple[str, ...]) -> None:
    assert [loc for loc, _ in parse_edit_body(VALID | change).input_fields] == [where]


def test_the_request_keeps_no_url_and_counts_the_stored_megapixels() -> None:
    """Every input image is stored, those given by URL too: the job sends them all as base64."""
    body = parse_edit_body(
        {"prompt": "p", "model": "flux-2-flex", "images": [IMAGE, "https://a.example/r.png"]}
    )
    stored = [
        StoredInput("k0", "s0", 10, "image/png", 32, 32),
        StoredInput("k1", "s1", 10, "image/png", 1000, 500, "https://a.example/r.png"),
    ]
    request = body.to_request(stored)
    assert (request.image_url, request.image_urls, request.input_mp) == (None, (), 0.5)


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
