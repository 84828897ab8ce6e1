"""The receiver's API description, served at `/openapi.json`."""

from __future__ import annotations

from typing import Any

from receiver import __version__


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_JOB = {
    "200": {
        "description": "The job",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
    }
}
_ID = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_AUTHED = {"401": _error("Missing or invalid bearer token"), "404": _error("No such job")}
_RANGE = {
    "name": "Range",
    "in": "header",
    "schema": {"type": "string"},
    "description": "one byte range, `bytes=first-last`, `bytes=first-` or `bytes=-suffix`",
}
_IMAGE = {
    "200": {"description": "The image", "content": {"image/*": {}}},
    "206": {"description": "The byte range asked for (Content-Range)", "content": {"image/*": {}}},
    "416": {"description": "The range starts past the end of the image"},
    "503": _error("The blob store is unavailable"),
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "kontext-receiver",
        "version": __version__,
        "description": "Submit FLUX.1 Kontext edits; results arrive by BFL webhook, are stored, and are "
        "announced as CloudEvents on the configured sinks.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "properties": {"detail": {}}},
            "EditRequest": {
                "type": "object",
                "required": ["prompt"],
                "additionalProperties": False,
                "properties": {
                    "prompt": {"type": "string", "minLength": 1, "maxLength": 10000},
                    "image": {
                        "type": "string",
                        "description": "base64 JPEG/PNG/WebP, at most 20 MB and 20 MP",
                    },
                    "image_url": {"type": "string", "format": "uri"},
                    "model": {
                        "enum": ["flux-kontext-pro", "flux-kontext-max"],
                        "default": "flux-kontext-pro",
                    },
                    "aspect_ratio": {"type": "string", "pattern": "^\\d+:\\d+$", "description": "3:7 to 7:3"},
                    "seed": {"type": "integer", "minimum": 0},
                    "output_format": {"enum": ["jpeg", "png"]},
                    "safety_tolerance": {"type": "integer", "minimum": 0, "maximum": 6},
                    "prompt_upsampling": {"type": "boolean"},
                    "metadata": {"type": "object", "description": "echoed in the event, at most 16 KiB"},
                },
            },
            "Job": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "state": {
                        "enum": [
                            "created",
                            "submitted",
                            "received",
                            "stored",
                            "published",
                            "failed",
                            "moderated",
                            "expired",
                        ]
                    },
                    "outcome": {"enum": ["completed", "failed", "moderated", "expired", None]},
                    "image": {"type": ["object", "null"]},
                    "inputs": {
                        "type": "array",
                        "description": "the input images as stored: sha256, bytes, content_type, width, "
                        "height, url (empty when the edit named an image_url)",
                        "items": {"type": "object"},
                    },
                    "error": {"type": ["object", "null"]},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/edits": {
            "post": {
                "summary": "Submit an edit",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "schema": {"type": "string", "maxLength": 255},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EditRequest"}}},
                },
                "responses": {
                    "202": {
                        "description": "Accepted; the job",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
                    },
                    "400": _error("Body is not JSON"),
                    "401": _error("Missing or invalid bearer token"),
                    "413": _error("Body over 28 MiB"),
                    "422": _error("Invalid fields, in BFL's {detail: [{loc, msg, type}]} shape"),
                    "503": _error("The blob store could not take the input image; nothing was stored"),
                },
            }
        },
        "/v1/jobs": {
            "get": {
                "summary": "List jobs, newest first",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string"}},
                    {"name": "delivery", "in": "query", "schema": {"enum": ["dead"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 500}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {"description": "Jobs"},
                    "401": _error("Missing or invalid bearer token"),
                },
            }
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "One job; `wait` holds the answer until its outcome (at most 60 s)",
                "parameters": [
                    *_ID,
                    {"name": "wait", "in": "query", "schema": {"type": "number", "maximum": 60}},
                ],
                "responses": _JOB | _AUTHED,
            }
        },
        "/v1/jobs/{job_id}/image": {
            "get": {
                "summary": "The stored result image (ETag: its sha256)",
                "parameters": [*_ID, _RANGE],
                "responses": _IMAGE | _AUTHED,
            }
        },
        "/v1/jobs/{job_id}/input": {
            "get": {
                "summary": "An input image of the edit, as it was submitted",
                "parameters": [
                    *_ID,
                    {
                        "name": "index",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                    _RANGE,
                ],
                "responses": _IMAGE | {"422": _error("index is not one of the job's input images")} | _AUTHED,
            }
        },
        "/v1/jobs/{job_id}/redeliver": {
            "post": {
                "summary": "Publish the job's event to every sink again (same event id)",
                "parameters": _ID,
                "responses": {"202": {"description": "Queued"}, "409": _error("The job has no event yet")}
                | _AUTHED,
            }
        },
        "/webhooks/bfl/{job_id}": {
            "post": {
                "summary": "BFL's completion webhook",
                "security": [],
                "parameters": [
                    *_ID,
                    {
                        "name": "X-Webhook-Secret",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {"description": "Persisted (or a duplicate, or a progress notice)"},
                    "400": _error("Not JSON, or not a BFL webhook body"),
                    "401": _error("Missing or wrong secret or signature"),
                    "404": _error("No such job"),
                    "413": _error("Body over 64 KiB"),
                },
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "Alive"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "security": [],
                "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {"200": {"description": "Metrics"}},
            }
        },
    },
}
