"""BFL's input limits for edits, per catalog model: pure checks shared by the receiver and the simulator.

Every check reports a `Problem` in the `{"loc", "msg", "type"}` shape of BFL's 422 bodies, and all
problems of a request are reported at once.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from receiver.catalog import (
    ASPECT_RATIO,
    GUIDANCE,
    GUIDANCE_RANGE,
    HEIGHT,
    MIN_SIDE,
    OPTIONAL_FIELDS,
    PROMPT_UPSAMPLING,
    SIDE_MULTIPLE,
    STEPS,
    STEPS_RANGE,
    WIDTH,
    ModelSpec,
)
from receiver.errors import InvalidRequest, Problem

MAX_PROMPT_CHARS = 10_000
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 20_000_000
MIN_ASPECT, MAX_ASPECT = 3 / 7, 7 / 3
MAX_WEBHOOK_URL_CHARS = 2083
MAX_SEED = 2**63 - 1
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
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

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1_000_000


ImageRef = InputImage | str  # a decoded input image, or an http(s) URL it is to be fetched from
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ImageSlot:
    """One input image as given: where it sits in the body, and its value."""

    loc: Loc
    value: Any


# Finds the input images in a body: (where to report that none was given, the images given).
ImageSlotFinder = Callable[[Mapping[str, Any]], tuple[Loc, list[ImageSlot]]]


@dataclass(frozen=True)
class EditFields:
    """The validated fields of an edit request (None where the caller left a field out)."""

    prompt: str
    images: tuple[ImageRef, ...]  # the image to edit first, then the references
    aspect_ratio: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    safety_tolerance: int | None = None
    output_format: str | None = None
    prompt_upsampling: bool | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None

    @property
    def input_mp(self) -> float | None:
        """Megapixels of every input image together, or None while some are URLs not yet fetched."""
        if any(isinstance(image, str) for image in self.images):
            return None
        return round(sum(image.megapixels for image in self.images if isinstance(image, InputImage)), 2)


def parse_edit(
    payload: Any,
    spec: ModelSpec,
    slots: ImageSlotFinder,
    *,
    accepts: frozenset[str] | None = None,
) -> EditFields:
    """Validate an edit for `spec`; raise `InvalidRequest` listing every problem.

    `slots` finds the input images in the body (and names where to report that none was given).
    Of the optional fields (`catalog.OPTIONAL_FIELDS`) only those in `accepts` (default: the model's)
    are read; the others are ignored, as BFL ignores them.
    """
    if not isinstance(payload, Mapping):
        raise InvalidRequest([Problem(("body",), "Input should be a JSON object", "dict_type")])
    problems: list[Problem] = []
    checker = _Checker(payload, problems)
    accepts = spec.fields if accepts is None else accepts
    taken = {key: payload.get(key) if key in accepts else None for key in OPTIONAL_FIELDS}
    prompt = checker.prompt()
    required_loc, found = slots(payload)
    images = checker.images(spec, required_loc, found)
    width, height = checker.size(spec, taken[WIDTH], taken[HEIGHT])
    fields = EditFields(
        prompt=prompt,
        images=images,
        aspect_ratio=checker.aspect_ratio(taken[ASPECT_RATIO]),
        seed=checker.integer("seed", payload.get("seed"), 0, MAX_SEED, high_kind="too_large"),
        width=width,
        height=height,
        steps=checker.integer(STEPS, taken[STEPS], *STEPS_RANGE),
        guidance=checker.number(GUIDANCE, taken[GUIDANCE], *GUIDANCE_RANGE),
        safety_tolerance=checker.integer(
            "safety_tolerance", payload.get("safety_tolerance"), 0, spec.max_safety
        ),
        output_format=checker.choice("output_format", spec.output_formats),
        prompt_upsampling=checker.boolean(PROMPT_UPSAMPLING, taken[PROMPT_UPSAMPLING]),
        webhook_url=checker.webhook_url(),
        webhook_secret=checker.string("webhook_secret", 1, 1024),
    )
    if problems:
        raise InvalidRequest(problems)
    return fields


def bfl_image_slots(spec: ModelSpec, first_keys: tuple[str, ...] = ("input_image",)) -> ImageSlotFinder:
    """BFL's own image fields: the first of `first_keys` given (the live API's `input_image`, the seed
    spec's `image`), then `input_image_2` .. `input_image_<max>`; higher ones are unknown fields to
    BFL, so ignored."""

    def find(payload: Mapping[str, Any]) -> tuple[Loc, list[ImageSlot]]:
        first = next((key for key in first_keys if payload.get(key) is not None), first_keys[0])
        keys = [first, *(f"input_image_{n}" for n in range(2, spec.max_images + 1))]
        slots = [ImageSlot(("body", key), payload[key]) for key in keys if payload.get(key) is not None]
        return ("body", first_keys[0]), slots

    return find


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

    def images(self, spec: ModelSpec, required_loc: Loc, slots: list[ImageSlot]) -> tuple[ImageRef, ...]:
        if not slots:
            self.problems.append(Problem(required_loc, "Field required", "missing"))
            return ()
        if len(slots) > spec.max_images:
            self.problems.append(
                Problem(
                    slots[spec.max_images].loc,
                    f"{spec.name} takes at most {spec.max_images} images",
                    "too_many_images",
                )
            )
            return ()
        images = tuple(image for slot in slots if (image := self.image(slot)) is not None)
        if len(images) == len(slots) and spec.max_input_mp is not None:
            total = sum(image.megapixels for image in images if isinstance(image, InputImage))
            if total > spec.max_input_mp:
                self.problems.append(
                    Problem(
                        slots[0].loc[:-1] or ("body",),
                        f"the input images have {total:.2f} megapixels together; "
                        f"{spec.name} takes at most {spec.max_input_mp:g}",
                        "input_too_large",
                    )
                )
        return images

    def image(self, slot: ImageSlot) -> ImageRef | None:
        value = slot.value
        if not isinstance(value, str):
            self.problems.append(Problem(slot.loc, "Input should be a valid string", "string_type"))
            return None
        if value.startswith(("http://", "https://")):
            if len(value) > MAX_WEBHOOK_URL_CHARS:
                msg = f"URL should have at most {MAX_WEBHOOK_URL_CHARS} characters"
                self.problems.append(Problem(slot.loc, msg, "url_too_long"))
                return None
            return value
        try:
            return decode_image(value)
        except ValueError as exc:
            self.problems.append(Problem(slot.loc, str(exc), "image_invalid"))
            return None

    def size(self, spec: ModelSpec, width: Any, height: Any) -> tuple[int | None, int | None]:
        """Output width and height: 0 (the input's) or at least 64 and a multiple of 16, within the
        model's megapixel cap."""
        sides = [self.side(key, value) for key, value in ((WIDTH, width), (HEIGHT, height))]
        if spec.max_output_mp is not None and all(sides):
            area = (sides[0] or 0) * (sides[1] or 0)
            if area > spec.max_output_mp * 1_000_000:
                msg = f"width x height is {area / 1e6:.2f} megapixels; at most {spec.max_output_mp:g}"
                self.fail(WIDTH, msg, "output_too_large")
                return None, None
        return sides[0], sides[1]

    def side(self, key: str, value: Any) -> int | None:
        side = self.integer(key, value, 0, 2**31)
        if side and (side < MIN_SIDE or side % SIDE_MULTIPLE):
            self.fail(
                key, f"{key} should be 0 or a multiple of {SIDE_MULTIPLE} of at least {MIN_SIDE}", "side"
            )
            return None
        return side

    def aspect_ratio(self, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or parse_aspect_ratio(value) is None:
            self.fail("aspect_ratio", "Aspect ratio must be 'W:H' between 3:7 and 7:3", "aspect_ratio")
            return None
        return value

    def integer(self, key: str, value: Any, low: int, high: int, *, high_kind: str = "range") -> int | None:
        """`high_kind` tells a bound of our own (the seed's int64) from one BFL documents. A number with
        no fraction (`3.0`) is an integer, as JSON Schema and BFL's validation have it."""
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "Input should be a valid integer", "int_type")
        elif not low <= value <= high:
            self.fail(key, f"Input should be between {low} and {high}", "range" if value < low else high_kind)
        else:
            return value
        return None

    def number(self, key: str, value: Any, low: float, high: float) -> float | None:
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

    def boolean(self, key: str, value: Any) -> bool | None:
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
