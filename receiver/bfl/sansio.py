"""BFL's wire protocol without I/O: request bodies, response and webhook parsing, status mapping."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from receiver.catalog import ModelSpec
from receiver.errors import BadRequest, UpstreamError
from receiver.models import Cost, EditRequest, epoch

# Statuses after which BFL does not retry a submit on its own; ours would fail the same way.
_FINAL_SUBMIT_STATUSES = frozenset({400, 401, 402, 403, 404, 413, 422})


class Report(StrEnum):
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"
    MODERATED = "moderated"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Submitted:
    task_id: str
    polling_url: str | None
    cost: Cost | None = None


@dataclass(frozen=True)
class TaskReport:
    """What BFL says about a task, from `get_result` or from a webhook, in either body shape."""

    report: Report
    task_id: str | None
    status: str
    sample: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    finished_at: float | None = None
    cost: float | None = None  # the settled credits, when BFL says


SAMPLE_URL_LIFETIME_S = 600.0  # what BFL documents for its signed result URLs


def sample_expires_at(url: str) -> float | None:
    """When a signed result URL stops working, if it says: BFL's Azure-style `se=` (RFC 3339), or the
    simulator's `exp=` (epoch seconds)."""
    query = dict(parse_qsl(urlsplit(url).query))
    try:
        if "se" in query:
            return epoch(query["se"])
        if "exp" in query:
            return float(query["exp"])
    except ValueError:
        return None
    return None


def decode_json(content: bytes | str) -> Any:
    """Standard JSON only, or `ValueError`: NaN and Infinity (which Python's parser takes) would be
    stored, then fail every JSON encoder downstream; nesting past Python's limit is refused too."""
    try:
        return json.loads(content, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def submit_body(
    spec: ModelSpec,
    request: EditRequest,
    images_base64: Sequence[str],
    webhook_url: str,
    webhook_secret: str,
) -> dict[str, Any]:
    """The submit body for `spec`: the images go to `input_image`, `input_image_2`, ... in the order
    they were given (see `input_sources`); a model that sends no webhooks is given no webhook fields."""
    sources = input_sources(request, images_base64)
    body: dict[str, Any] = {"prompt": request.prompt, "input_image": sources[0] if sources else None}
    body.update({f"input_image_{n}": source for n, source in enumerate(sources[1:], start=2)})
    if spec.webhooks:
        body |= {"webhook_url": webhook_url, "webhook_secret": webhook_secret}
    optional = {
        "aspect_ratio": request.aspect_ratio,
        "seed": request.seed,
        "width": request.width,
        "height": request.height,
        "steps": request.steps,
        "guidance": request.guidance,
        "output_format": request.output_format,
        "safety_tolerance": request.safety_tolerance,
        "prompt_upsampling": request.prompt_upsampling,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def input_sources(request: EditRequest, images_base64: Sequence[str]) -> list[str]:
    """Every input image as BFL takes it, in order. Jobs accepted now have every image stored, so all
    go as base64; older jobs kept the URLs they were given, passed on as they are, beside their stored
    ones (`image_urls`), and those from before `image_urls` have one image, stored or by URL."""
    if not request.image_urls:
        return list(images_base64) or ([request.image_url] if request.image_url else [])
    stored = iter(images_base64)
    return [url if url is not None else next(stored) for url in request.image_urls]


def parse_submit(status: int, body: Any) -> Submitted:
    """The task id of an accepted submit, or `UpstreamError` saying whether a retry can help."""
    if status == 200 and isinstance(body, Mapping) and isinstance(body.get("id"), str) and body["id"]:
        polling_url = body.get("polling_url")
        credits = _number(body.get("cost"))
        cost = (
            Cost(credits, _number(body.get("input_mp")), _number(body.get("output_mp")))
            if credits is not None
            else None
        )
        return Submitted(body["id"], polling_url if isinstance(polling_url, str) else None, cost)
    if status == 200:
        raise UpstreamError(status, "answer without a task id", retryable=True)
    raise refusal(status, body)


def parse_result(status: int, body: Any) -> TaskReport:
    """A `get_result` answer. `Task not found` comes as 200 with that status or as a 404."""
    if status == 404:
        return TaskReport(Report.NOT_FOUND, None, "Task not found")
    if status != 200 or not isinstance(body, Mapping):
        raise refusal(status, body)
    report = _report(body, body.get("id"))
    if report.report is Report.READY and report.sample is None:
        raise UpstreamError(status, "Ready without result.sample", retryable=True)
    return report


def parse_webhook(body: Any) -> TaskReport:
    """A webhook body in the observed (`task_id`/`SUCCESS`) or documented (`id`/`Ready`) shape."""
    if not isinstance(body, Mapping):
        raise BadRequest("webhook body must be a JSON object")
    task_id = body.get("task_id", body.get("id"))
    if not isinstance(task_id, str) or not task_id:
        raise BadRequest("webhook body has no task_id or id")
    if not isinstance(body.get("status"), str):
        raise BadRequest("webhook body has no status")
    report = _report(body, task_id)
    if report.report is Report.READY and report.sample is None:
        raise BadRequest("webhook reports success without result.sample")
    return report


def classify_status(status: str) -> Report:
    """Map every status spelling seen from BFL; unknown ones count as still running."""
    lowered = status.strip().lower()
    if lowered in {"ready", "success", "succeeded", "completed"}:
        return Report.READY
    if lowered in {"error", "failed", "failure"}:
        return Report.FAILED
    if "moderated" in lowered:
        return Report.MODERATED
    if lowered == "task not found":
        return Report.NOT_FOUND
    return Report.RUNNING


def refusal(status: int, body: Any) -> UpstreamError:
    """An answer other than success, saying whether a retry can help. The live API answers a key of
    the wrong shape with 422 `Invalid API key format`: a setting to fix, said as such."""
    detail = error_detail(body)
    if status == 422 and "api key" in detail.lower():
        detail = f"BFL says the API key is malformed ({detail}): check BFL_API_KEY"
    return UpstreamError(status, detail, retryable=status not in _FINAL_SUBMIT_STATUSES)


def error_detail(body: Any) -> str:
    if isinstance(body, Mapping):
        detail = body.get("detail", body.get("message", body.get("error")))
        if isinstance(detail, list):
            return "; ".join(_describe_problem(item) for item in detail)
        if detail is not None:
            return str(detail)[:500]
    return "no detail given"


def _describe_problem(item: Any) -> str:
    if isinstance(item, Mapping):
        loc = ".".join(str(part) for part in item.get("loc", []))
        return f"{loc}: {item.get('msg', '')}".strip(": ")
    return str(item)


def _report(body: Mapping[str, Any], task_id: Any) -> TaskReport:
    status = str(body.get("status", ""))
    report = classify_status(status)
    result = body.get("result")
    result = dict(result) if isinstance(result, Mapping) else {}
    sample = result.get("sample")
    error: dict[str, Any] | None = None
    if report is Report.FAILED:
        error = {"code": "upstream_error", "status": status, "message": _failure_message(body)}
    elif report is Report.MODERATED:
        details = body.get("details")
        reasons = details.get("Moderation Reasons") if isinstance(details, Mapping) else None
        error = {"code": "moderated", "status": status, "reasons": _reasons(reasons)}
    return TaskReport(
        report=report,
        task_id=task_id if isinstance(task_id, str) else None,
        status=status,
        sample=sample if isinstance(sample, str) and sample else None,
        result={k: v for k, v in result.items() if k != "sample"},
        error=error,
        finished_at=_finished_at(body, result),
        cost=_number(body.get("cost")) if report is not Report.RUNNING else None,
    )


def _number(value: Any) -> float | None:
    """A finite, non-negative JSON number, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf"):
        return float(value)
    return None


def _reasons(value: Any) -> list[str]:
    """BFL sends a list of strings; a lone value, or a list of other things, is kept as text."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, str) else json.dumps(item)[:200] for item in items][:20]


def _failure_message(body: Mapping[str, Any]) -> str:
    for key in ("message", "error", "details"):
        value = body.get(key)
        if value:
            return str(value)[:500]
    return "BFL reported an error"


def _finished_at(body: Mapping[str, Any], result: Mapping[str, Any]) -> float | None:
    """When BFL finished, if it says so believably; None otherwise (the receive time stands in)."""
    end_time = result.get("end_time")
    if isinstance(end_time, int | float) and not isinstance(end_time, bool):
        if _EPOCH_S[0] < end_time < _EPOCH_S[1]:
            return float(end_time)
        if _EPOCH_S[0] * 1000 < end_time < _EPOCH_S[1] * 1000:  # milliseconds
            return float(end_time) / 1000
        return None  # a relative clock, or nonsense
    timestamp = body.get("timestamp")
    if isinstance(timestamp, str):
        try:
            moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
        return seconds if _EPOCH_S[0] < seconds < _EPOCH_S[1] else None
    return None


# Epoch seconds from 2001 to 2286: what a real finishing time can be.
_EPOCH_S = (1e9, 1e10)
