"""BFL's input limits for Kontext edits, as pure checks shared by the receiver and the simulator.

Every check reports a `Problem` in the `{"loc", "msg", "type"}` shape of BFL's 422 bodies, and all
problems of a request are reported at once.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from receiver.errors import InvalidRequest, Problem

MAX_PROMPT_CHARS = 10_000
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 20_000_000
MIN_ASPECT, MAX_ASPECT = 3 / 7, 7 / 3
MAX_WEBHOOK_URL_CHARS = 2083
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
OUTPUT_FORMATS = ("jpeg", "png")
_ASPECT_RE = re.compile(r"([0-9]{1,5}):([0-9]{1,5})")
# base64 of MAX_IMAGE_BYTES, plus slack for line breaks: longer strings are refused before decoding.
MAX_BASE64_CHARS = (MAX_IMAGE_BYTES + 2) // 3 * 4 + 4096


@dataclass(frozen=True)
class InputImage:
    """A decoded, header-checked input image."""

    data: bytes
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class EditFields:
    """The validated fields of a Kontext edit request (None where the caller left a field out)."""

    prompt: str
    image: InputImage | None
    image_url: str | None
    aspect_ratio: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    safety_tolerance: int | None = None
    output_format: str | None = None
    prompt_upsampling: bool | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None


def parse_edit(payload: Any, *, image_keys: tuple[str, ...], url_keys: tuple[str, ...] = ()) -> EditFields:
    """Validate an edit request body; raise `InvalidRequest` listing every problem.

    `image_keys` name fields holding base64 (or an http(s) URL); `url_keys` name fields holding a URL only.
    """
    if not isinstance(payload, Mapping):
        raise InvalidRequest([Problem(("body",), "Input should be a JSON object", "dict_type")])
    problems: list[Problem] = []
    checker = _Checker(payload, problems)
    prompt = checker.prompt()
    image, image_url = checker.image(image_keys, url_keys)
    fields = EditFields(
        prompt=prompt,
        image=image,
        image_url=image_url,
        aspect_ratio=checker.aspect_ratio(),
        seed=checker.integer("seed", 0, 2**63 - 1),
        steps=checker.integer("steps", 1, 50),
        guidance=checker.number("guidance", 1.5, 10.0),
        safety_tolerance=checker.integer("safety_tolerance", 0, 6),
        output_format=checker.choice("output_format", OUTPUT_FORMATS),
        prompt_upsampling=checker.boolean("prompt_upsampling"),
        webhook_url=checker.webhook_url(),
        webhook_secret=checker.string("webhook_secret", 1, 1024),
    )
    if problems:
        raise InvalidRequest(problems)
    return fields


def parse_aspect_ratio(value: str) -> tuple[int, int] | None:
    """`"16:9"` as (16, 9) when well-formed and within 3:7..7:3, else None."""
    match = _ASPECT_RE.fullmatch(value)
    if not match:
        return None
    width, height = int(match[1]), int(match[2])
    if width == 0 or height == 0 or not MIN_ASPECT - 1e-9 <= width / height <= MAX_ASPECT + 1e-9:
        return None
    return width, height


def decode_image(encoded: str) -> InputImage:
    """Decode base64 and check the bytes are a JPEG, PNG or WebP within the size and pixel limits."""
    if len(encoded) > MAX_BASE64_CHARS:
        raise ValueError(f"image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    if encoded.startswith("data:"):
        raise ValueError("image must be plain base64, without a data: URI prefix")
    try:
        data = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image is not valid base64") from None
    return check_image_bytes(data)


def check_image_bytes(data: bytes) -> InputImage:
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    header = read_image_header(data)
    if header is None:
        raise ValueError("image is not a JPEG, PNG or WebP image")
    content_type, width, height = header
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"image has {width}x{height} pixels, more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
        )
    return InputImage(data=data, content_type=content_type, width=width, height=height)


def read_image_header(data: bytes) -> tuple[str, int, int] | None:
    """(content type, width, height) from an image's header, without decoding its pixels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                content_type = IMAGE_FORMATS.get(image.format or "")
                width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None
    if content_type is None or width <= 0 or height <= 0:
        return None
    return content_type, width, height


class _Checker:
    def __init__(self, payload: Mapping[str, Any], problems: list[Problem]) -> None:
        self.payload = payload
        self.problems = problems

    def fail(self, key: str, msg: str, kind: str) -> None:
        self.problems.append(Problem(("body", key), msg, kind))

    def prompt(self) -> str:
        value = self.payload.get("prompt")
        if value is None:
            self.fail("prompt", "Field required", "missing")
        elif not isinstance(value, str):
            self.fail("prompt", "Input should be a valid string", "string_type")
        elif not value.strip():
            self.fail("prompt", "String should not be empty", "string_too_short")
        elif len(value) > MAX_PROMPT_CHARS:
            self.fail(
                "prompt", f"String should have at most {MAX_PROMPT_CHARS} characters", "string_too_long"
            )
        else:
            return value
        return ""

    def image(
        self, image_keys: tuple[str, ...], url_keys: tuple[str, ...]
    ) -> tuple[InputImage | None, str | None]:
        present = [key for key in (*image_keys, *url_keys) if self.payload.get(key) is not None]
        if not present:
            self.fail(image_keys[0], "Field required", "missing")
            return None, None
        key = present[0]
        value = self.payload[key]
        if not isinstance(value, str) or not value:
            self.fail(key, "Input should be a non-empty string", "string_type")
            return None, None
        if value.startswith(("http://", "https://")):
            if len(value) > MAX_WEBHOOK_URL_CHARS:
                self.fail(key, f"URL should have at most {MAX_WEBHOOK_URL_CHARS} characters", "url_too_long")
                return None, None
            return None, value
        if key in url_keys:
            self.fail(key, "Input should be an http or https URL", "url_scheme")
            return None, None
        try:
            return decode_image(value), None
        except ValueError as exc:
            self.fail(key, str(exc), "image_invalid")
            return None, None

    def aspect_ratio(self) -> str | None:
        value = self.payload.get("aspect_ratio")
        if value is None:
            return None
        if not isinstance(value, str) or parse_aspect_ratio(value) is None:
            self.fail("aspect_ratio", "Aspect ratio must be 'W:H' between 3:7 and 7:3", "aspect_ratio")
            return None
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        value = self.payload.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "Input should be a valid integer", "int_type")
        elif not low <= value <= high:
            self.fail(key, f"Input should be between {low} and {high}", "range")
        else:
            return value
        return None

    def number(self, key: str, low: float, high: float) -> float | None:
        value = self.payload.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, "Input should be a valid number", "float_type")
        elif not low <= value <= high:
            self.fail(key, f"Input should be between {low:g} and {high:g}", "range")
        else:
            return float(value)
        return None

    def choice(self, key: str, options: tuple[str, ...]) -> str | None:
        value = self.payload.get(key)
        if value is None:
            return None
        if value not in options:
            self.fail(key, f"Input should be one of: {', '.join(options)}", "enum")
            return None
        return str(value)

    def boolean(self, key: str) -> bool | None:
        value = self.payload.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.fail(key, "Input should be a valid boolean", "bool_type")
        return None

    def string(self, key: str, low: int, high: int) -> str | None:
        value = self.payload.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not low <= len(value) <= high:
            self.fail(key, f"Input should be a string of {low} to {high} characters", "string_type")
            return None
        return value

    def webhook_url(self) -> str | None:
        value = self.string("webhook_url", 1, MAX_WEBHOOK_URL_CHARS)
        if value is not None and not value.startswith(("http://", "https://")):
            self.fail("webhook_url", "URL scheme should be 'http' or 'https'", "url_scheme")
            return None
        return value
