"""What the API takes and answers, as pydantic models: the handlers validate with them, and
`receiver.web.openapi` builds `/openapi.json` from them, so the two cannot drift apart.

Fields are composed from the annotated types below; a model that takes more (or other) fields gets a
body class of its own built from the same parts. Limits that JSON Schema cannot state (an image that
Pillow can read, a ratio within 3:7..7:3) are checked by validators and carry a custom `format`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    RootModel,
    Strict,
    Tag,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from receiver.bfl.validation import (
    MAX_BASE64_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_WEBHOOK_URL_CHARS,
    InputImage,
    Loc,
    decode_image,
    parse_aspect_ratio,
)
from receiver.catalog import (
    ASPECT_RATIO,
    CATALOG,
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
    Catalog,
    ModelSpec,
)
from receiver.errors import InvalidRequest, Problem
from receiver.models import EditRequest, ImageInfo, JobState, Outcome, StoredInput, Via

MAX_METADATA_BYTES = 16 * 1024
MAX_WAIT_S = 60.0
MAX_PAGE = 500
MAX_OFFSET = 10**9
MIN_THUMBNAIL, MAX_THUMBNAIL = 16, 1024

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
HTTP_URL = f"https?://[^{_SPACE}]+"


def _has_text(value: str) -> str:
    if not re.search(_TEXT, value):
        raise PydanticCustomError("string_too_short", "String should not be empty or only whitespace")
    return value


def _http_url(value: str) -> str:
    if not re.fullmatch(HTTP_URL, value):
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
_BASE64_IMAGE = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_BASE64_CHARS,
    "format": "kontext-image",
    "contentEncoding": "base64",
    "description": "Plain base64 (no data: prefix) of a JPEG, PNG or WebP image, at most 20 MB and 20 "
    "megapixels",
}
Base64Image = Annotated[InputImage, PlainValidator(_decoded_image), WithJsonSchema(_BASE64_IMAGE)]
ImageUrl = Annotated[
    str,
    Strict(),
    Field(
        max_length=MAX_WEBHOOK_URL_CHARS,
        json_schema_extra={"pattern": f"^{HTTP_URL}$"},
        description="An http(s) URL the receiver downloads the input image from before it answers (from "
        "a host RECEIVER_INPUT_HOSTS allows; the image is checked as a base64 one is, and stored)",
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
    Field(ge=0, le=MAX_SEED, description="Makes the result reproducible"),
    BeforeValidator(_integral),
]
Metadata = Annotated[
    dict[str, Any],
    Field(description=f"Echoed in the job and its event; at most {MAX_METADATA_BYTES} bytes of JSON"),
    AfterValidator(_small_metadata),
]


def _side(value: int) -> int:
    if value and (value < MIN_SIDE or value % SIDE_MULTIPLE):
        raise PydanticCustomError(
            "side", f"Input should be 0 or a multiple of {SIDE_MULTIPLE} of at least {MIN_SIDE}"
        )
    return value


def _image_or_url(value: Any) -> InputImage | str:
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        if len(value) > MAX_WEBHOOK_URL_CHARS:
            raise PydanticCustomError(
                "url_too_long", f"URL should have at most {MAX_WEBHOOK_URL_CHARS} chars"
            )
        return _http_url(value)
    return _decoded_image(value)


Side = Annotated[
    int,
    Strict(),
    Field(
        ge=0,
        json_schema_extra={"anyOf": [{"const": 0}, {"minimum": MIN_SIDE, "multipleOf": SIDE_MULTIPLE}]},
        description=f"0 for the input's, or a multiple of {SIDE_MULTIPLE} of at least {MIN_SIDE}; width x "
        "height within the model's megapixels",
    ),
    BeforeValidator(_integral),
    AfterValidator(_side),
]
# Validated into the decoded image, or kept as the URL BFL fetches it from.
AnyImage = Annotated[
    InputImage | str,
    PlainValidator(_image_or_url),
    WithJsonSchema(
        {
            "anyOf": [
                _BASE64_IMAGE,
                {"type": "string", "maxLength": MAX_WEBHOOK_URL_CHARS, "pattern": f"^{HTTP_URL}$"},
            ],
            "description": "A base64 image, as `image`, or an http(s) URL the receiver downloads it from, "
            "as `image_url`",
        }
    ),
]
_OPTIONAL: dict[str, Any] = {
    ASPECT_RATIO: AspectRatio,
    PROMPT_UPSAMPLING: Annotated[bool, Strict()],
    WIDTH: Side,
    HEIGHT: Side,
    STEPS: Annotated[int, Strict(), Field(ge=STEPS_RANGE[0], le=STEPS_RANGE[1]), BeforeValidator(_integral)],
    GUIDANCE: Annotated[float, Strict(), Field(ge=GUIDANCE_RANGE[0], le=GUIDANCE_RANGE[1])],
}
IMAGE_FORMS = ("image", "image_url", "images")


def _not_nullable(schema: dict[str, Any]) -> None:
    """The schema of an optional field that may be left out but not given as null."""
    schema.pop("default", None)
    (branch,) = (option for option in schema.pop("anyOf") if option != {"type": "null"})
    schema.update(branch)


class Body(BaseModel):
    """A request body: unknown fields are refused, as BFL refuses them."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EditBody(Body):
    """`POST /v1/edits`, the fields every model takes; each catalog model has a class of its own
    (`edit_body_for`) with its `model`, its images, formats and safety range, and its optional fields.
    Exactly one of `image`, `image_url` and `images` is given (null counts as left out, as it does for
    every optional field)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": [key], "properties": {key: {"type": "array" if key == "images" else "string"}}}
                for key in IMAGE_FORMS
            ]
        },
    )

    prompt: Prompt
    model: str  # each model's class narrows these four to what that model takes
    image: Base64Image | None = None
    image_url: ImageUrl | None = None
    images: list[AnyImage] | None = None
    seed: Seed | None = None
    output_format: str | None = None
    safety_tolerance: int | None = None
    metadata: Metadata = Field(default_factory=dict)

    @property
    def inputs(self) -> tuple[InputImage | str, ...]:
        """The input images in BFL's order: decoded, or the URL to fetch it from."""
        return tuple(value for _, value in self.input_fields)

    @property
    def input_fields(self) -> tuple[tuple[Loc, InputImage | str], ...]:
        """Each input image in BFL's order with where it is in the body (`images[2]`, `image_url`)."""
        if self.images:
            return tuple((("body", "images", n), image) for n, image in enumerate(self.images))
        if self.image is not None:
            return ((("body", "image"), self.image),)
        return ((("body", "image_url"), self.image_url),) if self.image_url else ()

    def to_request(self, inputs: Sequence[StoredInput]) -> EditRequest:
        """The job's record of this request, its input images stored as `inputs`."""
        optional: dict[str, Any] = {key: getattr(self, key, None) for key in OPTIONAL_FIELDS}
        return EditRequest(
            prompt=self.prompt,
            model=self.model,
            seed=self.seed,
            output_format=self.output_format,
            safety_tolerance=self.safety_tolerance,
            metadata=self.metadata,
            input_mp=round(megapixels(inputs), 2),
            **optional,
        )


def edit_body_for(spec: ModelSpec, *, default: bool) -> type[EditBody]:
    """The body class of one catalog model: `model` (which may be left out for the default one), up to
    its number of images, its output formats and safety range, and only the optional fields it takes."""
    fields: dict[str, Any] = {
        "model": (Literal[spec.name], spec.name if default else ...),
        "images": (Annotated[list[AnyImage], Field(min_length=1, max_length=spec.max_images)] | None, None),
        "output_format": (Literal[spec.output_formats] | None, None),
        "safety_tolerance": (
            Annotated[
                int,
                Strict(),
                Field(ge=0, le=spec.max_safety, description=f"0 strictest, {spec.max_safety} least strict"),
                BeforeValidator(_integral),
            ]
            | None,
            None,
        ),
        **{key: (kind | None, None) for key, kind in _OPTIONAL.items() if spec.takes(key)},
    }
    name = "Edit" + "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", spec.name))
    body: type[EditBody] = create_model(
        name,
        __base__=EditBody,
        __doc__=f"{spec.title}: {_price(spec)}.",
        **fields,
    )
    return body


def _price(spec: ModelSpec) -> str:
    if not spec.price.per_mp:
        return f"{spec.price.base:g} credits per edit"
    return f"{spec.price.base:g} credits, {spec.price.per_mp:g} more per further output MP and per input MP"


class EditBodies:
    """The body classes of a catalog's models, and the union `/openapi.json` describes."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.by_model = {
            spec.name: edit_body_for(spec, default=spec is catalog.default) for spec in catalog.values()
        }
        default = catalog.default.name

        def model_of(value: Any) -> str | None:
            model = (
                value.get("model", default) if isinstance(value, Mapping) else getattr(value, "model", None)
            )
            return model if isinstance(model, str) else None

        members = tuple(Annotated[body, Tag(name)] for name, body in self.by_model.items())
        union = Annotated[Union[members], Discriminator(model_of)]  # type: ignore[valid-type]  # noqa: UP007
        self.schema: type[RootModel[Any]] = create_model("EditRequest", __base__=RootModel[union])

    def parse(self, payload: Any) -> EditBody:
        """A valid edit body for its model, or `InvalidRequest` with every problem: the model's own limits
        (images, fields, sizes, megapixels) included, and a missing or doubled image."""
        if not isinstance(payload, Mapping):
            raise InvalidRequest([Problem(("body",), "Input should be a JSON object", "dict_type")])
        model = payload.get("model", self.catalog.default.name)
        found: list[Problem] = []
        if not isinstance(model, str) or model not in self.catalog:
            found.append(
                Problem(("body", "model"), f"Input should be one of: {', '.join(self.catalog)}", "enum")
            )
            payload = {key: value for key, value in payload.items() if key != "model"}
            model = self.catalog.default.name
        spec, cls = self.catalog[model], self.by_model[model]
        body: EditBody | None = None
        try:
            body = cls.model_validate(payload)
        except ValidationError as exc:
            found += [_for_model(problem, spec) for problem in problems(exc, "body")]
        given = [key for key in IMAGE_FORMS if payload.get(key) is not None]
        if not given:
            found.append(
                Problem(("body", "image"), "Field required: give image, image_url or images", "missing")
            )
        elif len(given) > 1:
            found.append(
                Problem(
                    ("body", given[1]),
                    f"Give one of image, image_url or images, not {' and '.join(given)}",
                    "extra_forbidden",
                )
            )
        if body is not None:
            found += _megapixels(body, spec)
        if found:
            raise InvalidRequest(found)
        assert body is not None
        return body


def _for_model(problem: Problem, spec: ModelSpec) -> Problem:
    """pydantic's word for a field or an image count the model does not take, said for the model."""
    field = problem.loc[1] if len(problem.loc) == 2 else None
    if problem.type == "extra_forbidden" and field in OPTIONAL_FIELDS:
        return Problem(problem.loc, f"{spec.name} does not take {field}", "model_field")
    if problem.type == "too_long" and field == "images":
        return Problem(problem.loc, f"{spec.name} takes at most {spec.max_images} images", "too_many_images")
    return problem


def _megapixels(body: EditBody, spec: ModelSpec) -> list[Problem]:
    """What JSON Schema cannot state: width x height within the output cap, the inputs within theirs."""
    found = []
    width, height = getattr(body, WIDTH, None), getattr(body, HEIGHT, None)
    if spec.max_output_mp is not None and width and height and width * height > spec.max_output_mp * 1e6:
        found.append(
            Problem(
                ("body", WIDTH),
                f"width x height is {width * height / 1e6:.2f} megapixels; {spec.name} makes at most "
                f"{spec.max_output_mp:g}",
                "output_too_large",
            )
        )
    decoded = [image for image in body.inputs if isinstance(image, InputImage)]
    return found + input_megapixels(spec, megapixels(decoded))


def megapixels(images: Sequence[InputImage | StoredInput]) -> float:
    return sum(image.width * image.height for image in images) / 1_000_000


def input_megapixels(spec: ModelSpec, total: float) -> list[Problem]:
    """A problem when the input images together have more megapixels than the model takes."""
    if spec.max_input_mp is None or total <= spec.max_input_mp:
        return []
    return [
        Problem(
            ("body", "images"),
            f"the input images have {total:.2f} megapixels together; {spec.name} takes at most "
            f"{spec.max_input_mp:g}",
            "input_too_large",
        )
    ]


EDIT_BODIES = EditBodies(CATALOG)


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
    include: Literal["deliveries"] | None = Field(
        default=None,
        description="`deliveries`: each job with its deliveries, as `GET /v1/jobs/{job_id}` has them",
        json_schema_extra=_not_nullable,
    )


class ImageQuery(Query):
    width: Annotated[int, Field(ge=MIN_THUMBNAIL, le=MAX_THUMBNAIL)] | None = Field(
        default=None,
        description="A WebP thumbnail this many pixels wide (never wider than the image) instead",
        json_schema_extra=_not_nullable,
    )


class InputQuery(ImageQuery):
    index: Annotated[int, Field(ge=0, description="Which input image, from 0")] = 0


class EventsQuery(Query):
    after: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Start after this event id (as `Last-Event-ID` does); without either, the stream "
        "starts with what happens next, or with `job`, at that job's first entry",
        json_schema_extra=_not_nullable,
    )
    job: Annotated[str, Field(min_length=1)] | None = Field(
        default=None, description="Only this job's entries", json_schema_extra=_not_nullable
    )
    type: Annotated[str, Field(min_length=1)] | None = Field(
        default=None,
        description="Only these types, comma-separated: kontext.job.state, kontext.delivery.state, "
        "kontext.edit.completed, kontext.edit.failed, kontext.edit.moderated, kontext.edit.expired",
        json_schema_extra=_not_nullable,
    )

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(name for name in (self.type or "").split(",") if name)


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
    source_url: str | None = Field(
        description="The URL the receiver downloaded it from; null for an image given as base64"
    )


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


class CostAnswer(Answer):
    credits: float
    input_mp: float | None
    output_mp: float | None


class HoldAnswer(Answer):
    model_config = ConfigDict(extra="allow")

    code: Literal["credit_cap"]
    message: str
    until: str


class JobAnswer(Answer):
    model_config = ConfigDict(title="Job")

    id: str
    state: JobState
    outcome: Outcome | None
    model: Annotated[str, Field(json_schema_extra={"enum": list(CATALOG)})]
    prompt: str
    metadata: dict[str, Any]
    bfl_task_id: str | None
    via: Via | None
    image: ImageInfo | None
    inputs: list[InputAnswer] = Field(
        description="The input images as stored, those given by URL too (none for an edit accepted "
        "before URL inputs were downloaded by the receiver)"
    )
    error: dict[str, Any] | None
    cost: CostAnswer | None = Field(description="As BFL answered the submit, or settled; null before")
    hold: HoldAnswer | None = Field(description="Why a created job waits beyond the queue")
    created_at: str
    timings: TimingsAnswer
    links: LinksAnswer
    deliveries: list[DeliveryAnswer] | None = Field(
        default=None,
        description="Only in `GET /v1/jobs/{job_id}`, and in `GET /v1/jobs?include=deliveries`",
        json_schema_extra=_not_nullable,
    )


class JobListAnswer(Answer):
    jobs: list[JobAnswer]
    limit: int
    offset: int


class UndeliveredAnswer(Answer):
    since: str | None = Field(description="When the oldest event not yet delivered to the sink was made")
    age_s: float


class ReachabilityAnswer(Answer):
    reachable: bool
    error: str | None = Field(default=None, json_schema_extra=_not_nullable)


class OverviewAnswer(Answer):
    jobs: dict[str, int] = Field(description="Jobs per state (every state, 0 included)")
    events_per_minute: int = Field(description="Completion events made in the last 60 s")
    dead_letters: int = Field(description="Jobs with a dead-lettered delivery")
    oldest_undelivered: dict[str, UndeliveredAnswer] = Field(description="Per sink with anything undelivered")
    sinks: dict[str, ReachabilityAnswer] = Field(
        description="Every configured sink, by name: whether it answered a ping just now (as in /readyz)"
    )


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
