"""BFL's wire protocol without sockets: submit bodies, submit/result answers and both webhook shapes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from receiver.bfl.sansio import (
    Report,
    Submitted,
    TaskReport,
    decode_json,
    parse_result,
    parse_submit,
    parse_webhook,
    submit_body,
)
from receiver.catalog import CATALOG
from receiver.errors import BadRequest, UpstreamError
from receiver.models import Cost, EditRequest

KONTEXT = CATALOG["flux-kontext-pro"]

SAMPLE = "https://delivery-eu1.bfl.ai/results/ab/cd/sample.jpeg?se=2025-01-01T00%3A10%3A00Z&sig=abc%3D"
POLLING = "https://api.eu1.bfl.ai/v1/get_result?id=task-1"
HOOK = "https://receiver.example/webhooks/bfl/job-1"
READY_RESULT = {
    "sample": SAMPLE,
    "prompt": "Change the car color to red",
    "seed": 42,
    "start_time": 1731.0,
    "end_time": 1745.2,
    "duration": 14.2,
}


def upstream_error(call: Any, *args: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        call(*args)
    return info.value


# --- submit ---------------------------------------------------------------------------------------


def test_submit_path_per_model() -> None:
    assert [spec.path for spec in CATALOG.values()] == [
        "/v1/flux-kontext-pro",
        "/v1/flux-kontext-max",
        "/v1/flux-2-pro",
        "/v1/flux-2-max",
        "/v1/flux-2-flex",
        "/v1/flux-2-klein-4b",
        "/v1/flux-2-klein-9b",
    ]


def test_submit_body_with_base64_omits_unset_optional_fields() -> None:
    request = EditRequest(prompt="Change the car color to red", metadata={"order": 1})
    assert submit_body(KONTEXT, request, ["aGVsbG8="], HOOK, "per-job-secret") == {
        "prompt": "Change the car color to red",
        "input_image": "aGVsbG8=",
        "webhook_url": HOOK,
        "webhook_secret": "per-job-secret",
    }


def test_submit_body_sends_every_set_optional_field_including_falsy_ones() -> None:
    request = EditRequest(
        prompt="p",
        aspect_ratio="16:9",
        seed=0,
        output_format="png",
        safety_tolerance=0,
        prompt_upsampling=False,
    )
    body = submit_body(KONTEXT, request, ["aGVsbG8="], HOOK, "s")
    assert {k: body[k] for k in ("aspect_ratio", "seed", "output_format", "safety_tolerance")} == {
        "aspect_ratio": "16:9",
        "seed": 0,
        "output_format": "png",
        "safety_tolerance": 0,
    }
    assert body["prompt_upsampling"] is False
    assert "metadata" not in body  # ours, never sent upstream


def test_submit_body_sends_several_images_in_order() -> None:
    body = submit_body(KONTEXT, EditRequest(prompt="p"), ["b25l", "dHdv", "dGhyZWU="], HOOK, "s")
    assert [body["input_image"], body["input_image_2"], body["input_image_3"]] == ["b25l", "dHdv", "dGhyZWU="]
    assert "input_image_4" not in body


def test_submit_body_keeps_the_order_of_images_given_inline_and_by_url() -> None:
    request = EditRequest(prompt="p", image_urls=(None, "https://images.example/ref.jpg", None))
    body = submit_body(CATALOG["flux-2-flex"], request, ["b25l", "dHdv"], HOOK, "s")
    assert [body["input_image"], body["input_image_2"], body["input_image_3"]] == [
        "b25l",
        "https://images.example/ref.jpg",
        "dHdv",
    ]


def test_submit_body_sends_the_flux2_fields_and_no_webhook_to_a_model_without_webhooks() -> None:
    quiet = dataclasses.replace(CATALOG["flux-2-flex"], name="flux-quiet", webhooks=False)
    request = EditRequest(prompt="p", width=1024, height=768, steps=20, guidance=4.5)
    body = submit_body(quiet, request, ["b25l"], HOOK, "s")
    assert body == {
        "prompt": "p",
        "input_image": "b25l",
        "width": 1024,
        "height": 768,
        "steps": 20,
        "guidance": 4.5,
    }


def test_submit_body_passes_an_image_url_through() -> None:
    request = EditRequest(prompt="p", image_url="https://images.example/car.jpg")
    assert submit_body(KONTEXT, request, [], HOOK, "s")["input_image"] == "https://images.example/car.jpg"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            {"id": "task-1", "polling_url": POLLING, "cost": 4.0},
            Submitted("task-1", POLLING, Cost(4.0)),
            id="polling",
        ),
        pytest.param(
            {
                "id": "task-1",
                "status": "Pending",
                "webhook_url": HOOK,
                "cost": 4.5,
                "input_mp": 1.02,
                "output_mp": 1.0,
            },
            Submitted("task-1", None, Cost(4.5, 1.02, 1.0)),
            id="no-polling-url",
        ),
        pytest.param(
            {"id": "task-1", "polling_url": POLLING, "cost": "free", "input_mp": True},
            Submitted("task-1", POLLING),
            id="no-believable-cost",
        ),
        pytest.param({"id": "task-1", "polling_url": None}, Submitted("task-1", None), id="null-polling-url"),
    ],
)
def test_parse_submit_accepted(body: dict[str, Any], expected: Submitted) -> None:
    assert parse_submit(200, body) == expected


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (402, {"detail": "Insufficient credits"}, "Insufficient credits"),
        (403, {"detail": "Key lacks access"}, "Key lacks access"),
        (422, {"detail": "prompt is too long"}, "prompt is too long"),
        (
            422,
            {
                "detail": [
                    {"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"},
                    {"loc": ["body", "seed"], "msg": "Input should be a valid integer", "type": "int_type"},
                ]
            },
            "body.prompt: Field required; body.seed: Input should be a valid integer",
        ),
        (401, {"message": "bad key"}, "bad key"),
    ],
)
def test_parse_submit_final_refusals_carry_the_upstream_detail(
    status: int, body: dict[str, Any], detail: str
) -> None:
    error = upstream_error(parse_submit, status, body)
    assert (error.status, error.detail, error.retryable) == (status, detail, False)


@pytest.mark.parametrize(
    ("status", "body", "detail"),
    [
        (429, {"detail": "Too many active tasks"}, "Too many active tasks"),
        (500, {"detail": "Internal Server Error"}, "Internal Server Error"),
        (503, "Service Unavailable", "no detail given"),
        (0, None, "no detail given"),  # no answer at all (connection lost)
    ],
)
def test_parse_submit_transient_refusals_are_retryable(status: int, body: Any, detail: str) -> None:
    error = upstream_error(parse_submit, status, body)
    assert (error.status, error.detail, error.retryable) == (status, detail, True)


@pytest.mark.parametrize("body", [{"status": "Pending"}, {"id": 17}, [], None], ids=repr)
def test_parse_submit_200_without_a_task_id_is_an_upstream_error(body: Any) -> None:
    error = upstream_error(parse_submit, 200, body)
    assert (error.status, error.detail) == (200, "answer without a task id")


def test_parse_submit_200_with_an_empty_task_id_is_an_upstream_error() -> None:
    error = upstream_error(parse_submit, 200, {"id": "", "polling_url": POLLING})
    assert (error.status, error.detail) == (200, "answer without a task id")


@pytest.mark.parametrize("parse", [parse_submit, parse_result], ids=["submit", "get_result"])
def test_a_malformed_api_key_is_a_final_refusal_naming_the_setting(parse: Any) -> None:
    error = upstream_error(parse, 422, {"detail": "Invalid API key format"})
    assert (error.status, error.retryable) == (422, False)
    assert error.detail == "BFL says the API key is malformed (Invalid API key format): check BFL_API_KEY"
    other = upstream_error(parse, 422, {"detail": [{"loc": ["body", "seed"], "msg": "bad", "type": "x"}]})
    assert other.detail == "body.seed: bad"


def test_long_upstream_detail_is_truncated() -> None:
    assert len(upstream_error(parse_submit, 403, {"detail": "x" * 5000}).detail) == 500


# --- get_result -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "report"),
    [
        ("Ready", Report.READY),
        ("Pending", Report.RUNNING),
        ("Processing", Report.RUNNING),
        ("Generating", Report.RUNNING),
        ("Reasoning", Report.RUNNING),
        ("Something New", Report.RUNNING),
        ("Error", Report.FAILED),
        ("Request Moderated", Report.MODERATED),
        ("Content Moderated", Report.MODERATED),
        ("Task not found", Report.NOT_FOUND),
    ],
)
def test_parse_result_maps_every_status_spelling(status: str, report: Report) -> None:
    parsed = parse_result(200, {"id": "task-1", "status": status, "result": {"sample": SAMPLE}})
    assert (parsed.report, parsed.status, parsed.task_id) == (report, status, "task-1")


def test_parse_result_ready_splits_the_sample_from_the_rest_of_the_result() -> None:
    parsed = parse_result(200, {"id": "task-1", "status": "Ready", "result": READY_RESULT, "progress": 1})
    assert parsed.sample == SAMPLE
    assert parsed.result == {k: v for k, v in READY_RESULT.items() if k != "sample"}
    assert parsed.error is None
    assert parsed.finished_at is None  # end_time 1745.2 is a relative clock, not an epoch


def test_parse_result_error_carries_the_message() -> None:
    parsed = parse_result(200, {"id": "task-1", "status": "Error", "details": "GPU fell over"})
    assert parsed.error == {"code": "upstream_error", "status": "Error", "message": "GPU fell over"}
    assert parsed.sample is None


@pytest.mark.parametrize("status", ["Request Moderated", "Content Moderated"])
def test_parse_result_moderated_carries_the_reasons(status: str) -> None:
    body = {"id": "task-1", "status": status, "details": {"Moderation Reasons": ["Derivative Works Filter"]}}
    assert parse_result(200, body).error == {
        "code": "moderated",
        "status": status,
        "reasons": ["Derivative Works Filter"],
    }


def test_parse_result_moderated_without_reasons_has_an_empty_list() -> None:
    error = parse_result(200, {"id": "task-1", "status": "Request Moderated", "details": None}).error
    assert error is not None and error["reasons"] == []


def test_parse_result_task_not_found_as_http_404() -> None:
    assert parse_result(404, {"detail": "Not Found"}) == TaskReport(Report.NOT_FOUND, None, "Task not found")


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (403, False)])
def test_parse_result_error_status_is_an_upstream_error(status: int, retryable: bool) -> None:
    error = upstream_error(parse_result, status, {"detail": "nope"})
    assert (error.status, error.detail, error.retryable) == (status, "nope", retryable)


def test_parse_result_200_that_is_not_an_object_is_an_upstream_error() -> None:
    assert upstream_error(parse_result, 200, ["not", "an", "object"]).status == 200


# --- webhooks -------------------------------------------------------------------------------------


def test_webhook_observed_shape() -> None:
    body = {"task_id": "task-1", "status": "SUCCESS", "result": READY_RESULT, "progress": None}
    parsed = parse_webhook(body)
    assert (parsed.report, parsed.task_id, parsed.status, parsed.sample) == (
        Report.READY,
        "task-1",
        "SUCCESS",
        SAMPLE,
    )
    assert parsed.result["seed"] == 42 and "sample" not in parsed.result
    assert parsed.finished_at is None


def test_webhook_observed_shape_with_an_epoch_end_time() -> None:
    body = {
        "task_id": "task-1",
        "status": "SUCCESS",
        "result": {"sample": SAMPLE, "end_time": 1_736_000_000.5},
    }
    assert parse_webhook(body).finished_at == 1_736_000_000.5


@pytest.mark.parametrize(
    "timestamp", ["2025-01-02T03:04:05Z", "2025-01-02T03:04:05+00:00", "2025-01-02T04:04:05+01:00"]
)
def test_webhook_documented_shape_takes_finished_at_from_the_timestamp(timestamp: str) -> None:
    body = {"id": "task-2", "status": "Ready", "result": {"sample": SAMPLE}, "timestamp": timestamp}
    parsed = parse_webhook(body)
    assert (parsed.report, parsed.task_id, parsed.sample) == (Report.READY, "task-2", SAMPLE)
    assert parsed.finished_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def test_webhook_unparseable_timestamp_leaves_finished_at_unknown() -> None:
    body = {"id": "task-2", "status": "Ready", "result": {"sample": SAMPLE}, "timestamp": "yesterday"}
    assert parse_webhook(body).finished_at is None


@pytest.fixture
def new_york_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york_time")
def test_webhook_timestamp_without_offset_is_utc() -> None:
    body = {
        "id": "task-2",
        "status": "Ready",
        "result": {"sample": SAMPLE},
        "timestamp": "2025-01-02T03:04:05",
    }
    assert parse_webhook(body).finished_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("status", ["processing", "Pending", "Generating"])
def test_webhook_non_terminal_status_is_running(status: str) -> None:
    parsed = parse_webhook({"task_id": "task-1", "status": status, "progress": 0.4})
    assert parsed.report is Report.RUNNING and parsed.error is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"task_id": "task-1", "status": "FAILED", "error": "out of memory"}, "out of memory"),
        (
            {"id": "task-1", "status": "Error", "error": "E42", "message": "generation failed"},
            "generation failed",
        ),
        ({"id": "task-1", "status": "Error"}, "BFL reported an error"),
    ],
)
def test_webhook_failure(body: dict[str, Any], message: str) -> None:
    parsed = parse_webhook(body)
    assert parsed.report is Report.FAILED
    assert parsed.error == {"code": "upstream_error", "status": body["status"], "message": message}


def test_webhook_content_moderated() -> None:
    parsed = parse_webhook(
        {"task_id": "task-1", "status": "Content Moderated", "details": {"Moderation Reasons": ["NSFW"]}}
    )
    assert parsed.report is Report.MODERATED
    assert parsed.error == {"code": "moderated", "status": "Content Moderated", "reasons": ["NSFW"]}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param({"status": "SUCCESS", "result": {"sample": SAMPLE}}, "no task_id", id="missing-id"),
        pytest.param({"task_id": "", "status": "SUCCESS"}, "no task_id", id="empty-id"),
        pytest.param({"id": 12, "status": "Ready"}, "no task_id", id="numeric-id"),
        pytest.param({"task_id": "task-1", "result": {"sample": SAMPLE}}, "no status", id="missing-status"),
        pytest.param({"task_id": "task-1", "status": 200}, "no status", id="numeric-status"),
        pytest.param({"task_id": "task-1", "status": "SUCCESS", "result": {}}, "sample", id="no-sample"),
        pytest.param({"task_id": "task-1", "status": "SUCCESS"}, "sample", id="no-result"),
        pytest.param(
            {"id": "task-1", "status": "Ready", "result": {"sample": ""}}, "sample", id="empty-sample"
        ),
        pytest.param(["task-1", "SUCCESS"], "JSON object", id="list"),
        pytest.param("SUCCESS", "JSON object", id="string"),
        pytest.param(None, "JSON object", id="null"),
    ],
)
def test_malformed_webhook_is_a_bad_request(body: Any, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        parse_webhook(body)


@pytest.mark.parametrize(
    ("end_time", "expected"),
    [
        (1_731_000_000.5, 1_731_000_000.5),
        (1_731_000_000_500, 1_731_000_000.5),  # milliseconds
        (1745.2, None),  # a relative clock
        (float("inf"), None),
        (10**20, None),
        (True, None),
    ],
)
def test_finish_time_is_taken_only_when_believable(end_time: float, expected: float | None) -> None:
    body = {
        "task_id": "t",
        "status": "SUCCESS",
        "result": {"sample": "https://x.bfl.ai/s.jpg", "end_time": end_time},
    }
    assert parse_webhook(body).finished_at == expected


def test_a_settled_cost_is_read_from_a_finished_task_only() -> None:
    ready = parse_result(200, {"id": "t", "status": "Ready", "result": READY_RESULT, "cost": 5.8})
    running = parse_result(200, {"id": "t", "status": "Generating", "cost": 5.8})
    assert (ready.cost, running.cost, running.report) == (5.8, None, Report.RUNNING)


@pytest.mark.parametrize(
    ("reasons", "kept"),
    [(["nsfw"], ["nsfw"]), ("nsfw", ["nsfw"]), (3, ["3"]), ([1, {"a": 1}], ["1", '{"a": 1}']), (None, [])],
)
def test_moderation_reasons_of_any_shape_are_kept_as_text(reasons: Any, kept: list[str]) -> None:
    body = {"task_id": "t", "status": "Request Moderated", "details": {"Moderation Reasons": reasons}}
    report = parse_webhook(body)
    assert report.error is not None and report.error["reasons"] == kept


@pytest.mark.parametrize("content", [b'{"status": NaN}', b'{"a": Infinity}', b"[" * 100_000])
def test_decode_json_refuses_what_is_not_standard_json(content: bytes) -> None:
    with pytest.raises(ValueError, match=r"JSON value|nested|Expecting"):
        decode_json(content)
