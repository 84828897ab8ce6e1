"""Strategies for the custom string formats of the receiver's API description, loaded by schemathesis
through SCHEMATHESIS_HOOKS: values JSON Schema cannot describe (a picture Pillow reads, a ratio within
3:7..7:3, a byte range inside an image of unknown size) are generated valid, so schemathesis's positive
cases are really valid. Image URLs, which the receiver downloads before it answers, are pointed at the
loopback image host the test runs (`TEST_INPUT_IMAGE_URL`): no generated host is ever looked up."""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis
from hypothesis import strategies as st

from receiver.bfl.validation import MAX_WEBHOOK_URL_CHARS
from receiver.catalog import CATALOG
from receiver.web.schemas import HTTP_URL
from tests.images import base64_image

IMAGES = [
    base64_image(fmt, size) for fmt in ("JPEG", "PNG", "WEBP") for size in ((16, 16), (40, 24), (24, 40))
]
RATIOS = [f"{w}:{h}" for w in range(1, 10) for h in range(1, 10) if 3 / 7 <= w / h <= 7 / 3]

schemathesis.openapi.format("kontext-image", st.sampled_from(IMAGES))
schemathesis.openapi.format("aspect-ratio", st.sampled_from(RATIOS))
# Ranges that start inside any image (a range past the end is a 416, tested on its own).
schemathesis.openapi.format(
    "byte-range", st.sampled_from(["bytes=0-", "bytes=0-0", "bytes=0-99", "bytes=-1"])
)


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: dict[str, object]
) -> None:
    """A valid `wait` is held at most a fraction of a second: these jobs never finish (the receiver runs
    without its background loops), and each would otherwise hold its request for the whole wait."""
    try:
        wait = float((case.query or {})["wait"])
    except (KeyError, TypeError, ValueError):
        return
    if 0 <= wait <= 60:
        case.query = (case.query or {}) | {"wait": min(wait, 0.2)}


def _side(value: object) -> float | None:
    """A width or height valid on its own (JSON's 64.0 is an integer too), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        return None
    return float(value) if value == 0 or (value >= 64 and value % 16 == 0) else None


def _within_megapixels(body: Any) -> Any:
    """width x height within the model's megapixels is a rule across two fields, which JSON Schema
    cannot state: a body whose sides are each valid but together too large gets height 0 (the input's).
    Sides that are invalid on their own are left as they are, so negative cases stay negative."""
    if not isinstance(body, dict):
        return body
    width, height, model = _side(body.get("width")), _side(body.get("height")), body.get("model")
    spec = CATALOG.get(model if isinstance(model, str) else CATALOG.default.name)
    if spec is None or spec.max_output_mp is None or width is None or height is None:
        return body
    if width * height <= spec.max_output_mp * 1e6:
        return body
    return body | {"height": 0}


def _loopback(value: Any) -> Any:
    """A valid image URL as the test's image host's (an invalid one stays, so negative cases stay so)."""
    if isinstance(value, str) and len(value) <= MAX_WEBHOOK_URL_CHARS and re.fullmatch(HTTP_URL, value):
        return os.environ["TEST_INPUT_IMAGE_URL"]
    return value


def _loopback_images(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    mapped = dict(body)
    if "image_url" in mapped:
        mapped["image_url"] = _loopback(mapped["image_url"])
    if isinstance(mapped.get("images"), list):
        mapped["images"] = [_loopback(image) for image in mapped["images"]]
    return mapped


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    """The generated bodies of the fuzzing phase (see `_within_megapixels` and `_loopback`)."""
    return _loopback_images(_within_megapixels(body))


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case[Any]) -> schemathesis.Case[Any]:
    """The cases of the other phases (see `_within_megapixels` and `_loopback`)."""
    case.body = _loopback_images(_within_megapixels(case.body))
    return case
