"""What the API takes and answers, as pydantic models: the handlers validate with them, and
`receiver.web.openapi` builds `/openapi.json` from them, so the two cannot drift apart.

Fields are composed from the annotated types below; a model that takes more (or other) fields gets a
body class of its own built from the same parts. Limits that JSON Schema cannot state (an image that
Pillow can read, a ratio within 3:7..7:3) are checked by validators and carry a custom `format`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from receiver.bfl.validation import (
    MAX_BASE64_CHARS,
    MAX_PROMPT_CHARS,
    MAX_WEBHOOK_URL_CHARS,
    InputImage,
    decode_image,
    parse_aspect_ratio,
)
from receiver.errors import InvalidRequest, Problem
from receiver.models import EditRequest, ImageInfo, JobState, Model, Outcome, Via

MAX_METADATA_BYTES = 16 * 1024
MAX_WAIT_S = 60.0
MAX_PAGE = 500
MAX_OFFSET = 10**9

Location = Literal["body", "query", "header", "path"]
T = TypeVar("T", bound=BaseModel)


def validate(model: type[T], data: Any, location: Location) -> T:
    """`data` as a `model`, or `InvalidRequest` listing every problem in BFL's `{loc, msg, type}` shape."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(problems(exc, location)) from None


def problems(exc: ValidationError, location: Location) -> list[Problem]:
    return [
        Problem((location, *error["loc"]), error["msg"], error["type"])
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


# Whitespace as JSON Schema patterns (ECMA-262) see it; Python's `\s` and the Rust engine's differ from it
# (and from each other) on a few control characters. Patterns and the checks share these classes.
_SPACE = r"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_TEXT = f"[^{_SPACE}]"
_URL = f"https?://[^{_SPACE}]+"


def _has_text(value: str) -> str:
    if not re.search(_TEXT, value):
        raise PydanticCustomError("string_too_short", "String should not be empty or only whitespace")
    return value


def _http_url(value: str) -> str:
    if not re.fullmatch(_URL, value):
        raise PydanticCustomError("url_scheme", "Input should be an http or https URL, without spaces")
    return value


def _decoded_image(value: Any) -> InputImage:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    try:
        return decode_image(value)
    except ValueError as exc:
        raise PydanticCustomError("image_invalid", str(exc)) from None


def _ratio_in_range(value: str) -> str:
    if parse_aspect_ratio(value) is None:
        raise PydanticCustomError("aspect_ratio", "Aspect ratio must be 'W:H' between 3:7 and 7:3")
    return value


def _small_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise PydanticCustomError("too_long", f"metadata is over {MAX_METADATA_BYTES} bytes of JSON")
    return value


Prompt = Annotated[
    str,
    Strict(),
    Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        json_schema_extra={"pattern": _TEXT},
        description="What to change in the image",
    ),
    AfterValidator(_has_text),
]
# Validated into the decoded, header-checked image; described as the string it arrives as.
Base64Image = Annotated[
    InputImage,
    PlainValidator(_decoded_image),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_BASE64_CHARS,
            "format": "kontext-image",
            "contentEncoding": "base64",
            "description": "Plain base64 (no data: prefix) of a JPEG, PNG or WebP image, at most 20 MB "
            "and 20 megapixels",
        }
    ),
]
ImageUrl = Annotated[
    str,
    Strict(),
    Field(
        max_length=MAX_WEBHOOK_URL_CHARS,
        json_schema_extra={"pattern": f"^{_URL}$"},
        description="An http(s) URL BFL downloads the input image from",
    ),
    AfterValidator(_http_url),
]
AspectRatio = Annotated[
    str,
    Strict(),
    Field(
        # No `pattern`: the range is part of the format, and what fits a pattern may still be out of it.
        json_schema_extra={"format": "aspect-ratio"},
        description="`W:H` (each 1 to 5 digits) of the result, from 3:7 to 7:3; the input's ratio when "
        "left out",
    ),
    AfterValidator(_ratio_in_range),
]


def _integral(value: Any) -> Any:
    """JSON does not tell 2 from 2.0, and JSON Schema's integers include both (strings and booleans
    stay refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Seed = Annotated[
    int,
    Strict(),
    Field(ge=0, le=2**63 - 1, description="Makes the result reproducible"),
    BeforeValidator(_integral),
]
SafetyTolerance = Annotated[
    int, Strict(), Field(ge=0, le=6, description="0 strictest, 6 least strict"), BeforeValidator(_integral)
]
OutputFormat = Literal["jpeg", "png"]
Metadata = Annotated[
    dict[str, Any],
    Field(description=f"Echoed in the job and its event; at most {MAX_METADATA_BYTES} bytes of JSON"),
    AfterValidator(_small_metadata),
]


def _not_nullable(schema: dict[str, Any]) -> None:
    """The schema of an optional field that may be left out but not given as null."""
    schema.pop("default", None)
    (branch,) = (option for option in schema.pop("anyOf") if option != {"type": "null"})
    schema.update(branch)


class Body(BaseModel):
    """A request body: unknown fields are refused, as BFL refuses them."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EditBody(Body):
    """`POST /v1/edits`, for the FLUX.1 Kontext models: exactly one of `image` and `image_url` is given
    (null counts as left out, as it does for every optional field)."""

    model_config = ConfigDict(
        title="EditRequest",
        json_schema_extra={
            "oneOf": [
                {"required": [key], "properties": {key: {"type": "string"}}} for key in ("image", "image_url")
            ]
        },
    )

    prompt: Prompt
    image: Base64Image | None = None
    image_url: ImageUrl | None = None
    model: Model = Model.PRO
    aspect_ratio: AspectRatio | None = None
    seed: Seed | None = None
    output_format: OutputFormat | None = None
    safety_tolerance: SafetyTolerance | None = None
    prompt_upsampling: Annotated[bool, Strict()] | None = None
    metadata: Metadata = Field(default_factory=dict)

    def to_request(self) -> EditRequest:
        """The job's record of this request, without the image bytes."""
        return EditRequest(
            prompt=self.prompt,
            model=self.model,
            image_url=self.image_url,
            aspect_ratio=self.aspect_ratio,
            seed=self.seed,
            output_format=self.output_format,
            safety_tolerance=self.safety_tolerance,
            prompt_upsampling=self.prompt_upsampling,
            metadata=self.metadata,
        )


def parse_edit_body(payload: Any) -> EditBody:
    """A valid edit body, or `InvalidRequest` with every problem, including a missing or doubled image
    (which pydantic does not see as a field problem)."""
    if not isinstance(payload, Mapping):
        raise InvalidRequest([Problem(("body",), "Input should be a JSON object", "dict_type")])
    found: list[Problem] = []
    try:
        body = EditBody.model_validate(payload)
    except ValidationError as exc:
        found = problems(exc, "body")
    given = [key for key in ("image", "image_url") if payload.get(key) is not None]
    if not given:
        found.append(Problem(("body", "image"), "Field required: give image or image_url", "missing"))
    elif len(given) > 1:
        found.append(Problem(("body", "image_url"), "Give image or image_url, not both", "extra_forbidden"))
    if found:
        raise InvalidRequest(found)
    return body


class Query(BaseModel):
    """Query parameters: strings from the URL, converted; parameters the operation does not name are
    ignored, as HTTP caches and proxies may add their own."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class JobQuery(Query):
    wait: Annotated[
        float,
        Field(
            ge=0,
            le=MAX_WAIT_S,
            allow_inf_nan=False,
            description=f"Hold the answer up to this many seconds (at most {MAX_WAIT_S:g}) until the job "
            "has its outcome",
        ),
    ] = 0.0


class JobsQuery(Query):
    state: JobState | None = Field(
        default=None, description="Only jobs in this state", json_schema_extra=_not_nullable
    )
    delivery: Literal["dead"] | None = Field(
        default=None,
        description="`dead`: only jobs with a dead-lettered delivery",
        json_schema_extra=_not_nullable,
    )
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 50
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0


class InputQuery(Query):
    index: Annotated[int, Field(ge=0, description="Which input image, from 0")] = 0


# Answers, for the API description (the handlers build them as plain dicts; the schemathesis run in
# the tests checks that every answer matches).


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorAnswer(Answer):
    detail: str


class ProblemAnswer(Answer):
    loc: list[str | int]
    msg: str
    type: str


class InvalidAnswer(Answer):
    detail: list[ProblemAnswer]


class InputAnswer(Answer):
    sha256: str
    bytes: int
    content_type: str
    width: int
    height: int
    url: str = Field(description="Where `GET /v1/jobs/{job_id}/input?index=N` serves it")


class TimingsAnswer(Answer):
    submitted_at: str | None
    bfl_finished_at: str | None
    received_at: str | None
    stored_at: str | None
    finished_at: str | None
    published_at: str | None


class LinksAnswer(Answer):
    self: str
    image: str | None = Field(default=None, json_schema_extra=_not_nullable)
    input: str | None = Field(default=None, json_schema_extra=_not_nullable)


class DeliveryAnswer(Answer):
    sink: str = Field(description="The sink's URL without credentials")
    state: Literal["pending", "delivered", "dead"]
    attempts: int
    last_error: str | None
    delivered_at: str | None
    next_attempt_at: str | None = Field(description="When a pending delivery is tried next")


class JobAnswer(Answer):
    model_config = ConfigDict(title="Job")

    id: str
    state: JobState
    outcome: Outcome | None
    model: Model
    prompt: str
    metadata: dict[str, Any]
    bfl_task_id: str | None
    via: Via | None
    image: ImageInfo | None
    inputs: list[InputAnswer] = Field(description="The input images as stored (none for an image_url)")
    error: dict[str, Any] | None
    created_at: str
    timings: TimingsAnswer
    links: LinksAnswer
    deliveries: list[DeliveryAnswer] | None = Field(
        default=None, description="Only in `GET /v1/jobs/{job_id}`", json_schema_extra=_not_nullable
    )


class JobListAnswer(Answer):
    jobs: list[JobAnswer]
    limit: int
    offset: int


class RedeliveredAnswer(Answer):
    id: str
    redelivered_to: list[str]


class WebhookAnswer(Answer):
    status: Literal["accepted", "duplicate", "ignored"]
    state: JobState | None = Field(default=None, json_schema_extra=_not_nullable)
    reason: str | None = Field(default=None, json_schema_extra=_not_nullable)


class StatusAnswer(Answer):
    model_config = ConfigDict(extra="allow")

    status: str


class SinkReachabilityAnswer(Answer):
    reachable: bool
    error: str | None = Field(default=None, json_schema_extra=_not_nullable)


class ReadyAnswer(Answer):
    status: Literal["ready"]
    sinks: dict[str, SinkReachabilityAnswer] = Field(
        description="Each sink by name: did it answer a ping within half a second. A sink that is down "
        "never makes /readyz a 503"
    )
