"""BFL's input limits (`parse_edit`): every problem in the `{loc, msg, type}` shape, all at once."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest

from receiver.bfl.validation import (
    MAX_IMAGE_BYTES,
    MAX_PROMPT_CHARS,
    EditFields,
    ImageSlot,
    InputImage,
    Loc,
    bfl_image_slots,
    parse_edit,
)
from receiver.catalog import CATALOG, GUIDANCE, STEPS
from receiver.errors import InvalidRequest, Problem
from tests.images import encode_image

KONTEXT = CATALOG["flux-kontext-pro"]
# The seed spec's Kontext request: steps and guidance beside the model's own fields.
SEED_FIELDS = KONTEXT.fields | {STEPS, GUIDANCE}


def image_or_url(payload: Mapping[str, Any]) -> tuple[Loc, list[ImageSlot]]:
    """`image` (base64 or a URL), as the seed spec names it."""
    if payload.get("image") is not None:
        return ("body", "image"), [ImageSlot(("body", "image"), payload["image"])]
    return ("body", "image"), []


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


PNG_B64 = b64(encode_image())


def payload(**changes: Any) -> dict[str, Any]:
    """A valid request with `changes` applied; a value of None removes the field."""
    body: dict[str, Any] = {"prompt": "Change the car color to red", "image": PNG_B64}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def parse(body: Any) -> EditFields:
    return parse_edit(body, KONTEXT, image_or_url, accepts=SEED_FIELDS)


def first_image(body: Any) -> InputImage:
    image = parse(body).images[0]
    assert isinstance(image, InputImage)
    return image


def problems_of(body: Any) -> list[Problem]:
    with pytest.raises(InvalidRequest) as info:
        parse(body)
    return info.value.problems


def only_problem(body: Any) -> Problem:
    problems = problems_of(body)
    assert len(problems) == 1, problems
    return problems[0]


def test_every_problem_is_reported_at_once_in_bfl_shape() -> None:
    body = {
        "image": "data:image/png;base64," + PNG_B64,
        "aspect_ratio": "21:5",
        "seed": True,
        "steps": 0,
        "guidance": 11,
        "safety_tolerance": 7,
        "output_format": "gif",
        "prompt_upsampling": "yes",
        "webhook_url": "ftp://receiver.example/hook",
    }
    reported = [p.as_dict() for p in problems_of(body)]
    assert [(p["loc"], p["type"]) for p in reported] == [
        (["body", "prompt"], "missing"),
        (["body", "image"], "image_invalid"),
        (["body", "aspect_ratio"], "aspect_ratio"),
        (["body", "seed"], "int_type"),
        (["body", "steps"], "range"),
        (["body", "guidance"], "range"),
        (["body", "safety_tolerance"], "range"),
        (["body", "output_format"], "enum"),
        (["body", "prompt_upsampling"], "bool_type"),
        (["body", "webhook_url"], "url_scheme"),
    ]
    assert all(set(p) == {"loc", "msg", "type"} and isinstance(p["msg"], str) and p["msg"] for p in reported)


def test_invalid_request_message_names_each_field() -> None:
    with pytest.raises(InvalidRequest, match=r"body\.prompt: Field required; body\.steps: "):
        parse(payload(prompt=None, steps=51))


@pytest.mark.parametrize("body", [[], "prompt", None, 3], ids=repr)
def test_body_that_is_not_an_object(body: Any) -> None:
    assert only_problem(body).as_dict() == {
        "loc": ["body"],
        "msg": "Input should be a JSON object",
        "type": "dict_type",
    }


@pytest.mark.parametrize(
    ("changes", "field", "kind", "msg_part"),
    [
        pytest.param({"prompt": None}, "prompt", "missing", "Field required", id="prompt-missing"),
        pytest.param({"prompt": "   "}, "prompt", "string_too_short", "empty", id="prompt-blank"),
        pytest.param({"prompt": 42}, "prompt", "string_type", "string", id="prompt-number"),
        pytest.param(
            {"prompt": "x" * (MAX_PROMPT_CHARS + 1)},
            "prompt",
            "string_too_long",
            "10000",
            id="prompt-too-long",
        ),
        pytest.param({"image": None}, "image", "missing", "Field required", id="image-missing"),
        pytest.param({"image": ""}, "image", "image_invalid", "JPEG, PNG", id="image-empty"),
        pytest.param({"image": 42}, "image", "string_type", "string", id="image-number"),
        pytest.param({"image": "@@@not*base64@@@"}, "image", "image_invalid", "base64", id="bad-base64"),
        pytest.param(
            {"image": "data:image/png;base64," + PNG_B64}, "image", "image_invalid", "data:", id="data-uri"
        ),
        pytest.param({"image": b64(b"hello, world")}, "image", "image_invalid", "JPEG, PNG", id="text"),
        pytest.param(
            {"image": b64(encode_image("GIF", mode="P"))}, "image", "image_invalid", "JPEG, PNG", id="gif"
        ),
        pytest.param({"aspect_ratio": "1:3"}, "aspect_ratio", "aspect_ratio", "3:7", id="ratio-too-tall"),
        pytest.param({"aspect_ratio": "8:3"}, "aspect_ratio", "aspect_ratio", "7:3", id="ratio-too-wide"),
        pytest.param({"aspect_ratio": "16x9"}, "aspect_ratio", "aspect_ratio", "W:H", id="ratio-x"),
        pytest.param({"aspect_ratio": "16:"}, "aspect_ratio", "aspect_ratio", "W:H", id="ratio-no-height"),
        pytest.param({"aspect_ratio": "16:0"}, "aspect_ratio", "aspect_ratio", "W:H", id="ratio-zero"),
        pytest.param({"aspect_ratio": "-16:9"}, "aspect_ratio", "aspect_ratio", "W:H", id="ratio-negative"),
        pytest.param({"aspect_ratio": 1.78}, "aspect_ratio", "aspect_ratio", "W:H", id="ratio-number"),
        pytest.param({"steps": 0}, "steps", "range", "between 1 and 50", id="steps-0"),
        pytest.param({"steps": 51}, "steps", "range", "between 1 and 50", id="steps-51"),
        pytest.param({"steps": 20.5}, "steps", "int_type", "integer", id="steps-float"),
        pytest.param({"guidance": 1.0}, "guidance", "range", "between 1.5 and 10", id="guidance-1"),
        pytest.param({"guidance": 11}, "guidance", "range", "between 1.5 and 10", id="guidance-11"),
        pytest.param({"guidance": "3"}, "guidance", "float_type", "number", id="guidance-string"),
        pytest.param({"guidance": True}, "guidance", "float_type", "number", id="guidance-bool"),
        pytest.param({"safety_tolerance": 7}, "safety_tolerance", "range", "0 and 6", id="safety-7"),
        pytest.param({"safety_tolerance": -1}, "safety_tolerance", "range", "0 and 6", id="safety-minus-1"),
        pytest.param({"safety_tolerance": "2"}, "safety_tolerance", "int_type", "integer", id="safety-str"),
        pytest.param({"seed": True}, "seed", "int_type", "integer", id="seed-bool"),
        pytest.param({"steps": False}, "steps", "int_type", "integer", id="steps-bool"),
        pytest.param({"seed": -1}, "seed", "range", "between 0", id="seed-negative"),
        pytest.param({"seed": 2**63}, "seed", "too_large", "between 0", id="seed-over-int64"),
        pytest.param({"output_format": "gif"}, "output_format", "enum", "jpeg, png", id="format-gif"),
        pytest.param({"output_format": "webp"}, "output_format", "enum", "jpeg, png", id="format-webp"),
        pytest.param({"prompt_upsampling": 1}, "prompt_upsampling", "bool_type", "boolean", id="upsampling"),
        pytest.param(
            {"webhook_url": "ftp://r.example/h"}, "webhook_url", "url_scheme", "http", id="hook-ftp"
        ),
        pytest.param({"webhook_url": "receiver/h"}, "webhook_url", "url_scheme", "http", id="hook-relative"),
        pytest.param({"webhook_url": ""}, "webhook_url", "string_type", "1 to 2083", id="hook-empty"),
        pytest.param(
            {"webhook_url": "https://r.example/" + "h" * 2083},
            "webhook_url",
            "string_type",
            "2083",
            id="hook-long",
        ),
        pytest.param({"webhook_secret": ""}, "webhook_secret", "string_type", "1 to 1024", id="secret-empty"),
    ],
)
def test_single_problem(changes: dict[str, Any], field: str, kind: str, msg_part: str) -> None:
    problem = only_problem(payload(**changes))
    assert (problem.loc, problem.type) == (("body", field), kind)
    assert msg_part in problem.msg


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"prompt": "x" * MAX_PROMPT_CHARS}, id="prompt-at-limit"),
        pytest.param({"aspect_ratio": "3:7"}, id="ratio-3-7"),
        pytest.param({"aspect_ratio": "7:3"}, id="ratio-7-3"),
        pytest.param({"aspect_ratio": "16:9"}, id="ratio-16-9"),
        pytest.param({"steps": 1, "guidance": 1.5, "safety_tolerance": 0, "seed": 0}, id="low-bounds"),
        pytest.param(
            {"steps": 50, "guidance": 10, "safety_tolerance": 6, "seed": 2**63 - 1}, id="high-bounds"
        ),
        pytest.param({"output_format": "jpeg", "prompt_upsampling": False}, id="format-jpeg"),
        pytest.param({"output_format": "png", "prompt_upsampling": True}, id="format-png"),
        pytest.param({"webhook_url": "http://r.example/h", "webhook_secret": "s"}, id="webhook"),
    ],
)
def test_values_at_the_limits_are_accepted(changes: dict[str, Any]) -> None:
    fields = parse(payload(**changes))
    for key, value in changes.items():
        assert getattr(fields, key) == value


def test_optional_fields_default_to_none() -> None:
    fields = parse(payload())
    assert fields.prompt == "Change the car color to red"
    assert [fields.aspect_ratio, fields.seed, fields.steps, fields.guidance, fields.safety_tolerance] == [
        None
    ] * 5
    assert [fields.output_format, fields.prompt_upsampling, fields.webhook_url, fields.width] == [None] * 4


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_valid_images_are_accepted_with_their_header(fmt: str, content_type: str) -> None:
    data = encode_image(fmt, size=(40, 17))
    image = first_image(payload(image=b64(data)))
    assert (image.content_type, image.width, image.height, image.data) == (content_type, 40, 17, data)


def test_base64_with_line_breaks_is_accepted() -> None:
    wrapped = "\n".join(PNG_B64[i : i + 76] for i in range(0, len(PNG_B64), 76))
    image = first_image(payload(image=wrapped))
    assert (image.width, image.height) == (64, 48)  # encode_image's default size


def test_base64_longer_than_20_mb_is_refused_before_decoding() -> None:
    problem = only_problem(payload(image="A" * (MAX_IMAGE_BYTES * 4 // 3 + 8192)))
    assert (problem.type, problem.msg) == ("image_invalid", "image is larger than 20 MB")


def test_decoded_image_over_20_mb_is_refused() -> None:
    # A real PNG followed by padding: its header reads fine, so only the size can refuse it.
    data = encode_image()
    problem = only_problem(payload(image=b64(data + b"\0" * (MAX_IMAGE_BYTES + 1 - len(data)))))
    assert (problem.type, problem.msg) == ("image_invalid", "image is larger than 20 MB")


@pytest.mark.parametrize(("size", "accepted"), [((5000, 4000), True), ((5000, 4001), False)])
def test_pixel_limit_is_20_megapixels(size: tuple[int, int], accepted: bool) -> None:
    encoded = b64(encode_image("PNG", size=size, mode="1"))  # a blank bilevel PNG: tiny on the wire
    assert len(encoded) < 100_000
    if accepted:
        image = first_image(payload(image=encoded))
        assert (image.width, image.height) == size
    else:
        problem = only_problem(payload(image=encoded))
        assert problem.type == "image_invalid"
        assert "5000x4001" in problem.msg and "20 megapixels" in problem.msg


def test_an_http_url_is_passed_through_without_download() -> None:
    assert parse(payload(image="https://images.example/car.jpg")).images == (
        "https://images.example/car.jpg",
    )


def test_url_over_2083_chars_is_refused() -> None:
    problem = only_problem(payload(image="https://images.example/" + "a" * 2083))
    assert (problem.loc, problem.type) == (("body", "image"), "url_too_long")


def test_bfl_image_fields_are_input_image_then_input_image_2_up_to_the_models_limit() -> None:
    body = {"prompt": "p", "image_url": "https://images.example/a.jpg"}
    with pytest.raises(InvalidRequest) as info:
        parse_edit(body, KONTEXT, bfl_image_slots(KONTEXT))
    assert [(p.loc, p.type) for p in info.value.problems] == [(("body", "input_image"), "missing")]

    refs = {f"input_image_{n}": f"https://images.example/{n}.jpg" for n in range(2, 6)}
    fields = parse_edit({"prompt": "p", "input_image": PNG_B64, **refs}, KONTEXT, bfl_image_slots(KONTEXT))
    assert fields.images[1:] == tuple(f"https://images.example/{n}.jpg" for n in range(2, 5))  # not _5


@pytest.mark.parametrize(
    ("model", "count", "accepted"),
    [
        ("flux-kontext-max", 4, True),
        ("flux-kontext-max", 5, False),
        ("flux-2-flex", 8, True),
        ("flux-2-flex", 9, False),
        ("flux-2-klein-9b", 5, False),
    ],
)
def test_each_model_takes_its_own_number_of_images(model: str, count: int, accepted: bool) -> None:
    spec = CATALOG[model]

    def slots(body: Any) -> tuple[Loc, list[ImageSlot]]:
        return ("body", "images"), [ImageSlot(("body", "images", n), PNG_B64) for n in range(count)]

    if accepted:
        assert len(parse_edit({"prompt": "p"}, spec, slots).images) == count
    else:
        with pytest.raises(InvalidRequest) as info:
            parse_edit({"prompt": "p"}, spec, slots)
        [problem] = info.value.problems
        assert (problem.loc, problem.type) == (("body", "images", spec.max_images), "too_many_images")


@pytest.mark.parametrize(
    ("model", "changes", "field", "kind"),
    [
        ("flux-2-pro", {"width": 1000}, "width", "side"),
        ("flux-2-pro", {"height": 48}, "height", "side"),
        ("flux-2-pro", {"width": 2048, "height": 2064}, "width", "output_too_large"),
        ("flux-2-pro", {"safety_tolerance": 6}, "safety_tolerance", "range"),
        ("flux-2-flex", {"steps": 51}, "steps", "range"),
        ("flux-2-flex", {"guidance": 1.4}, "guidance", "range"),
    ],
)
def test_fields_and_limits_follow_the_model(
    model: str, changes: dict[str, Any], field: str, kind: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_edit(payload(**changes), CATALOG[model], image_or_url)
    [problem] = info.value.problems
    assert (problem.loc, problem.type) == (("body", field), kind)


def test_a_field_the_model_does_not_take_is_ignored_as_bfl_ignores_it() -> None:
    fields = parse_edit(payload(steps=20, width=1000), KONTEXT, image_or_url)
    assert (fields.steps, fields.width) == (None, None)


def test_flux2_sizes_within_the_cap_and_0_for_the_inputs_are_accepted() -> None:
    spec = CATALOG["flux-2-flex"]
    fields = parse_edit(payload(width=2000, height=2000, steps=1, guidance=10), spec, image_or_url)
    assert (fields.width, fields.height, fields.steps, fields.guidance) == (2000, 2000, 1, 10.0)
    assert parse_edit(payload(width=0), spec, image_or_url).width == 0


def test_flux2_pro_caps_the_inputs_at_9_megapixels_together() -> None:
    spec = CATALOG["flux-2-pro"]
    big = b64(encode_image("PNG", size=(3000, 1000), mode="1"))  # 3 MP each

    def slots(body: Any) -> tuple[Loc, list[ImageSlot]]:
        return ("body", "images"), [ImageSlot(("body", "images", n), big) for n in range(body["n"])]

    assert parse_edit({"prompt": "p", "n": 3}, spec, slots).input_mp == 9.0
    with pytest.raises(InvalidRequest) as info:
        parse_edit({"prompt": "p", "n": 4}, spec, slots)
    assert [(p.loc, p.type) for p in info.value.problems] == [(("body", "images"), "input_too_large")]
