"""Strategies for the custom string formats of the receiver's API description, loaded by schemathesis
through SCHEMATHESIS_HOOKS: values JSON Schema cannot describe (a picture Pillow reads, a ratio within
3:7..7:3, a byte range inside an image of unknown size) are generated valid, so schemathesis's positive
cases are really valid."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import strategies as st

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
