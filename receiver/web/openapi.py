"""The receiver's API description, served at `/openapi.json`.

Request bodies, query parameters and answers come from the pydantic models in `receiver.web.schemas`,
the very ones the handlers validate with; this module adds what each operation answers and how it is
authorised.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from receiver import __version__
from receiver.web.edits import MAX_EDIT_BODY, MAX_IDEMPOTENCY_KEY
from receiver.web.schemas import (
    EDIT_BODIES,
    EditBodies,
    ErrorAnswer,
    EventsQuery,
    ImageQuery,
    InputQuery,
    InvalidAnswer,
    JobAnswer,
    JobListAnswer,
    JobQuery,
    JobsQuery,
    OverviewAnswer,
    Query,
    ReadyAnswer,
    RedeliveredAnswer,
    StatusAnswer,
    WebhookAnswer,
)
from receiver.web.webhooks import MAX_WEBHOOK_BODY

_REF = "#/components/schemas/{model}"
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_WEBHOOK_SECRET: list[dict[str, list[str]]] = [{"webhookSecret": []}]
_HEADER = {"schema": {"type": "string"}}


def _ref(model: type[BaseModel] | str) -> dict[str, str]:
    return {"$ref": _REF.format(model=model if isinstance(model, str) else model.__name__)}


def _json(description: str, model: type[BaseModel], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(model)}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def _error(description: str) -> dict[str, Any]:
    return _json(description, ErrorAnswer)


_UNAUTHORIZED = _json(
    "Missing or invalid bearer token",
    ErrorAnswer,
    {"WWW-Authenticate": _HEADER | {"required": True, "description": "`Bearer`"}},
)
_INVALID = _json("Invalid fields or parameters, in BFL's `{detail: [{loc, msg, type}]}` shape", InvalidAnswer)
_NO_JOB = _error("No such job")
_RETRY_AFTER = {"Retry-After": _HEADER | {"required": True, "description": "Seconds"}}
_UNAVAILABLE = _json(
    "The job store (or the blob store) cannot be reached just now; nothing was changed",
    ErrorAnswer,
    _RETRY_AFTER,
)
_SLOW_BODY = _json(
    "The body did not arrive within RECEIVER_BODY_TIMEOUT_S; the connection is closed",
    ErrorAnswer,
    {"Connection": _HEADER | {"required": True, "description": "`close`"}},
)
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
}


_IMAGE_CONTENT = {
    media: {"schema": {"type": "string", "format": "binary"}}
    for media in ("image/jpeg", "image/png", "image/webp")
}
_RANGE = {
    "name": "Range",
    "in": "header",
    "schema": {"type": "string", "format": "byte-range"},
    "description": "One byte range: `bytes=first-last`, `bytes=first-` or `bytes=-suffix`. One that starts "
    "past the end of the image is a 416; a header of another form is ignored (RFC 9110) and the whole "
    "image is sent",
}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "schema": {"type": "string"},
    "description": "ETags of the copies the client has (or `*`): a 304 when one is the stored image",
}
_IMAGE = {
    "200": {
        "description": "The image",
        "headers": {
            "Content-Length": _HEADER | {"required": True},
            "ETag": _HEADER
            | {"required": True, "description": "The image's sha256 (and width, for a thumbnail)"},
            "Accept-Ranges": _HEADER | {"required": True, "description": "`bytes` (`none` for a thumbnail)"},
        },
        "content": _IMAGE_CONTENT,
    },
    "206": {
        "description": "The byte range asked for",
        "headers": {
            "Content-Range": _HEADER | {"required": True},
            "Content-Length": _HEADER | {"required": True},
            "ETag": _HEADER | {"required": True},
        },
        "content": _IMAGE_CONTENT,
    },
    "304": {
        "description": "The client's copy is the image: If-None-Match named its ETag",
        "headers": {"ETag": _HEADER | {"required": True}},
    },
    "416": {
        "description": "The range starts past the end of the image",
        "headers": {"Content-Range": _HEADER | {"required": True, "description": "`bytes */<size>`"}},
    },
}


def _query_parameters(model: type[Query], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    """One parameter per field of a query model (whose own schema is dropped from the components)."""
    schema = schemas.pop(model.__name__)
    parameters = []
    for name, field in schema["properties"].items():
        field.pop("title", None)
        if field.get("default", 0) is None:
            del field["default"]
        description = field.pop("description", None)
        parameter = {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", ()),
            "schema": field,
        }
        parameters.append(parameter | ({"description": description} if description else {}))
    return parameters


def build_openapi(bodies: EditBodies = EDIT_BODIES) -> dict[str, Any]:
    """The description of an app whose edits are validated by `bodies` (one class per catalog model)."""
    models: list[type[BaseModel]] = [
        bodies.schema,
        JobQuery,
        JobsQuery,
        ImageQuery,
        InputQuery,
        EventsQuery,
        JobAnswer,
        OverviewAnswer,
        JobListAnswer,
        RedeliveredAnswer,
        WebhookAnswer,
        StatusAnswer,
        ReadyAnswer,
        ErrorAnswer,
        InvalidAnswer,
    ]
    _, defs = models_json_schema([(model, "validation") for model in models], ref_template=_REF)
    schemas: dict[str, Any] = defs["$defs"]
    job_query = _query_parameters(JobQuery, schemas)
    jobs_query = _query_parameters(JobsQuery, schemas)
    image_query = _query_parameters(ImageQuery, schemas)
    input_query = _query_parameters(InputQuery, schemas)
    events_query = _query_parameters(EventsQuery, schemas)
    schemas["BflWebhook"] = _BFL_WEBHOOK
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kontext-receiver",
            "version": __version__,
            "description": "Submit BFL FLUX edits (FLUX.1 Kontext, FLUX.2); results arrive by BFL webhook "
            "(or are polled for), are stored, and are announced as CloudEvents on the configured sinks.",
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of RECEIVER_API_TOKENS",
                },
                "webhookSecret": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Webhook-Secret",
                    "description": "The per-job secret the receiver gave BFL with the edit",
                },
            },
            "schemas": schemas,
        },
        "paths": {
            "/v1/edits": {
                "post": {
                    "operationId": "createEdit",
                    "summary": "Submit an edit",
                    "description": "Input images given by URL (`image_url`, or URLs in `images`) are "
                    "downloaded by the receiver before it answers, several at once and all within "
                    "RECEIVER_INPUT_FETCH_TIMEOUT_S, from hosts RECEIVER_INPUT_HOSTS allows (internal "
                    "addresses only when named exactly; each redirect, at most 3, checked before it is "
                    "followed), checked as base64 images are, and stored: BFL gets every image as base64. "
                    "A URL that is not allowed, cannot be downloaded or gives no acceptable image is a 422 "
                    "naming its field (`url_not_allowed`, `url_fetch_failed`, `image_invalid`); then nothing "
                    "is stored.",
                    "security": _BEARER,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "description": "The same key and body within the store's lifetime answer "
                            "the first job again (`Idempotent-Replayed: true`); the same key with "
                            "another body is a 409",
                            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(bodies.schema)}},
                    },
                    "responses": {
                        "202": _json(
                            "Accepted; the job",
                            JobAnswer,
                            {
                                "Location": _HEADER | {"required": True},
                                "Idempotent-Replayed": _HEADER | {"description": "`true` on a replay"},
                            },
                        ),
                        "400": _error("Body is not JSON (or holds NaN/Infinity, or nests too deeply)"),
                        "401": _UNAUTHORIZED,
                        "408": _SLOW_BODY,
                        "409": _error("The Idempotency-Key was used with a different request"),
                        "413": _error(f"Body over {MAX_EDIT_BODY} bytes"),
                        "422": _json(
                            "Invalid fields, or an image URL that is not allowed, could not be downloaded "
                            "or gives no acceptable image, in BFL's `{detail: [{loc, msg, type}]}` shape; "
                            "nothing was stored",
                            InvalidAnswer,
                        ),
                        "429": _json(
                            "RECEIVER_MAX_QUEUED edits already wait for BFL; nothing was stored",
                            ErrorAnswer,
                            _RETRY_AFTER,
                        ),
                        "503": _json(
                            "RECEIVER_MAX_UPLOADS bodies are being read already, or the job store or "
                            "blob store cannot be reached; nothing was stored",
                            ErrorAnswer,
                            _RETRY_AFTER,
                        ),
                    },
                }
            },
            "/v1/jobs": {
                "get": {
                    "operationId": "listJobs",
                    "summary": "List jobs, newest first",
                    "security": _BEARER,
                    "parameters": jobs_query,
                    "responses": {
                        "503": _UNAVAILABLE,
                        "200": _json("A page of jobs", JobListAnswer),
                        "401": _UNAUTHORIZED,
                        "422": _INVALID,
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "operationId": "getJob",
                    "summary": "One job, with its deliveries",
                    "security": _BEARER,
                    "parameters": [_JOB_ID, *job_query],
                    "responses": {
                        "503": _UNAVAILABLE,
                        "200": _json("The job", JobAnswer),
                        "401": _UNAUTHORIZED,
                        "404": _NO_JOB,
                        "422": _INVALID,
                    },
                }
            },
            "/v1/jobs/{job_id}/image": {
                "get": {
                    "operationId": "getJobImage",
                    "summary": "The stored result image, or a thumbnail of it",
                    "security": _BEARER,
                    "parameters": [_JOB_ID, *image_query, _RANGE, _IF_NONE_MATCH],
                    "responses": _IMAGE
                    | {
                        "401": _UNAUTHORIZED,
                        "404": _error("No such job, or it has no stored image"),
                        "422": _INVALID,
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/v1/jobs/{job_id}/input": {
                "get": {
                    "operationId": "getJobInput",
                    "summary": "An input image of the edit, as it was submitted, or a thumbnail of it",
                    "security": _BEARER,
                    "parameters": [_JOB_ID, *input_query, _RANGE, _IF_NONE_MATCH],
                    "responses": _IMAGE
                    | {
                        "401": _UNAUTHORIZED,
                        "404": _error("No such job, or it has no input image at that index"),
                        "422": _INVALID,
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/v1/jobs/{job_id}/redeliver": {
                "post": {
                    "operationId": "redeliverJob",
                    "summary": "Publish the job's event to every sink again (same event id)",
                    "security": _BEARER,
                    "parameters": [_JOB_ID],
                    "responses": {
                        "503": _UNAVAILABLE,
                        "202": _json("Queued for every sink", RedeliveredAnswer),
                        "401": _UNAUTHORIZED,
                        "404": _NO_JOB,
                        "409": _error("The job has no event yet"),
                    },
                }
            },
            "/v1/events": {
                "get": {
                    "operationId": "streamEvents",
                    "summary": "Server-Sent Events: job states, completion CloudEvents, delivery states",
                    "description": "Each entry is `id: <n>`, `event: <type>`, `data: <JSON>`, in "
                    "the order the store committed them; `Last-Event-ID` (or `after`) resumes after an "
                    "entry on any replica of the same store. An idle stream gets a `: heartbeat` "
                    "comment every RECEIVER_SSE_HEARTBEAT_S seconds.",
                    "security": _BEARER,
                    "parameters": [
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "description": "The last event id seen; the stream resumes after it",
                            "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        },
                        *events_query,
                    ],
                    "responses": {
                        "200": {
                            "description": "The stream, until the client leaves",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "401": _UNAUTHORIZED,
                        "422": _INVALID,
                        "503": _error("RECEIVER_MAX_STREAMS streams are open in this process; retry later"),
                    },
                }
            },
            "/v1/overview": {
                "get": {
                    "operationId": "overview",
                    "summary": "Jobs per state, completion events per minute, dead letters, and the oldest "
                    "undelivered event per sink",
                    "security": _BEARER,
                    "responses": {"200": _json("The overview", OverviewAnswer), "401": _UNAUTHORIZED},
                }
            },
            "/webhooks/bfl/{job_id}": {
                "post": {
                    "operationId": "bflWebhook",
                    "summary": "BFL's completion webhook",
                    "security": _WEBHOOK_SECRET,
                    "parameters": [
                        _JOB_ID,
                        {
                            "name": "X-BFL-Signature",
                            "in": "header",
                            "description": "`sha256=<hex>`: HMAC-SHA256 of the body under the secret; "
                            "checked when present",
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("BflWebhook")}},
                    },
                    "responses": {
                        "503": _UNAVAILABLE,
                        "200": _json("Persisted (or a duplicate, or a progress notice)", WebhookAnswer),
                        "400": _error("Not JSON, or not a BFL webhook body"),
                        "401": _error("Missing or wrong secret or signature"),
                        "404": _NO_JOB,
                        "408": _SLOW_BODY,
                        "409": _error("The body is about another task than the job's"),
                        "413": _error(f"Body over {MAX_WEBHOOK_BODY} bytes"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": _json("Alive", StatusAnswer)},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: the store answers and the process is not stopping; each sink's "
                    "reachability by name (pinged at most every 5 s)",
                    "security": [],
                    "responses": {
                        "200": _json("Ready, whether or not every sink is reachable", ReadyAnswer),
                        "503": _json("Not ready: shutting down, or the store is unreachable", StatusAnswer),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Metrics, in the Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This description",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }


# BFL sends either shape; `receiver.bfl.sansio.parse_webhook` reads both.
_BFL_WEBHOOK: dict[str, Any] = {
    "type": "object",
    "description": "BFL's webhook: observed `{task_id, status: SUCCESS, result}` or documented "
    "`{id, status: Ready, result}`; `status` values other than a final one are acknowledged and ignored",
    "required": ["status"],
    "anyOf": [{"required": ["task_id"]}, {"required": ["id"]}],
    "properties": {
        "task_id": {"type": "string", "minLength": 1},
        "id": {"type": "string", "minLength": 1},
        "status": {"type": "string"},
        "result": {"type": "object", "properties": {"sample": {"type": "string"}}},
        "details": {"type": ["object", "null"]},
    },
}

OPENAPI = build_openapi()
