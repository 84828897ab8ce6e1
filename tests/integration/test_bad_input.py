"""Bad input gets a clear error with the right status and changes nothing."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.web.edits import MAX_EDIT_BODY
from receiver.webhook_auth import body_signature
from tests.images import base64_image, encode_image
from tests.integration.stack import FAST_SIM, IMAGE_B64, SIM_KEY, TOKEN, Stack, stack
from tests.servers import serve, wait_until

# Webhooks never arrive and nobody polls: a submitted job stays put while the test sends its own.
QUIET_SIM = dataclasses.replace(FAST_SIM, webhook_drop_rate=1.0)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("bad-input"), QUIET_SIM) as running:
        yield running


@pytest.fixture
def submitted(quiet: Stack) -> str:
    job_id: str = quiet.submit()["id"]
    quiet.wait_state(job_id, "submitted")
    return job_id


def snapshot(running: Stack) -> tuple[Any, ...]:
    return (running.jobs(), running.sim("/_sim/stats")["submits"], running.events())


VALID = {"prompt": "Change the car color to red", "image": IMAGE_B64}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": None}, "prompt"),
        ({"prompt": "x" * 10_001}, "prompt"),
        ({"image": "not base64!"}, "image"),
        ({"image": base64.b64encode(b"plain text, not an image").decode()}, "image"),
        ({"image": "A" * (28 * 1024 * 1024 - 200)}, "image"),
        ({"image": base64_image("PNG", (5000, 4100), "1")}, "image"),
        ({"aspect_ratio": "1:3"}, "aspect_ratio"),
        ({"aspect_ratio": "wide"}, "aspect_ratio"),
        ({"safety_tolerance": 7}, "safety_tolerance"),
        ({"output_format": "gif"}, "output_format"),
        ({"seed": "42"}, "seed"),
        ({"model": "flux-pro"}, "model"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"steps": 20}, "steps"),
        ({"webhook_url": "http://attacker.example/hook"}, "webhook_url"),
        ({"image": None, "image_url": "ftp://example.com/a.png"}, "image_url"),
    ],
)
def test_invalid_edit_is_refused_with_422(quiet: Stack, change: dict[str, Any], field: str) -> None:
    before = snapshot(quiet)
    body = {key: value for key, value in (VALID | change).items() if value is not None}
    response = quiet.post_edit(body)
    assert response.status_code == 422, response.text
    assert field in [problem["loc"][-1] for problem in response.json()["detail"]]
    assert snapshot(quiet) == before


def test_every_problem_is_reported_at_once(quiet: Stack) -> None:
    response = quiet.post_edit({"prompt": "", "image": "!!", "safety_tolerance": 9})
    assert response.status_code == 422
    assert {p["loc"][-1] for p in response.json()["detail"]} == {"prompt", "image", "safety_tolerance"}


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({}, json.dumps(VALID), 401),
        ({"Authorization": "Bearer wrong"}, json.dumps(VALID), 401),
        ({"Authorization": f"Basic {TOKEN}"}, json.dumps(VALID), 401),
        ({"Authorization": f"Bearer {TOKEN}"}, "{not json", 400),
        ({"Authorization": f"Bearer {TOKEN}"}, json.dumps(VALID | {"metadata": {"a": float("nan")}}), 400),
        ({"Authorization": f"Bearer {TOKEN}"}, "[" * 100_000, 400),
        ({"Authorization": f"Bearer {TOKEN}"}, "x" * (MAX_EDIT_BODY + 1), 413),
        ({"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k" * 300}, json.dumps(VALID), 422),
    ],
)
def test_edit_request_errors(quiet: Stack, headers: dict[str, str], content: str, status: int) -> None:
    before = snapshot(quiet)
    response = httpx.post(f"{quiet.url}/v1/edits", content=content, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str | list)
    assert snapshot(quiet) == before


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs/some-id", "/v1/jobs/some-id/image"])
def test_job_endpoints_need_the_token(quiet: Stack, path: str) -> None:
    assert httpx.get(quiet.url + path).status_code == 401


def test_unknown_job_is_404(quiet: Stack) -> None:
    assert quiet.client.get("/v1/jobs/nope").status_code == 404
    assert quiet.client.get("/v1/jobs/nope/image").status_code == 404
    assert quiet.client.post("/v1/jobs/nope/redeliver").status_code == 404


def test_job_without_outcome_has_no_image_and_no_event(quiet: Stack, submitted: str) -> None:
    assert quiet.client.get(f"/v1/jobs/{submitted}/image").status_code == 404
    assert quiet.client.post(f"/v1/jobs/{submitted}/redeliver").status_code == 409


@pytest.mark.parametrize(
    ("query", "status"), [("state=bogus", 422), ("limit=0", 422), ("delivery=live", 422)]
)
def test_bad_job_queries(quiet: Stack, query: str, status: int) -> None:
    assert quiet.client.get(f"/v1/jobs?{query}").status_code == status


SUCCESS = {"task_id": "t", "status": "SUCCESS", "result": {"sample": "http://127.0.0.1:1/x.jpg"}}


@pytest.mark.parametrize(
    ("secret", "body", "headers", "status"),
    [
        (None, SUCCESS, {}, 401),
        ("wrong-secret", SUCCESS, {}, 401),
        ("", SUCCESS, {}, 401),
        ("valid", SUCCESS, {"X-BFL-Signature": "sha256=" + "0" * 64}, 401),
        ("valid", b"{not json", {}, 400),
        (
            "valid",
            b'{"task_id": "t", "status": "SUCCESS", "result": {"sample": "x", "end_time": Infinity}}',
            {},
            400,
        ),
        ("valid", ["a", "list"], {}, 400),
        ("valid", {"status": "SUCCESS"}, {}, 400),
        ("valid", {"task_id": "t", "status": "SUCCESS"}, {}, 400),
        ("valid", b"{" + b" " * (64 * 1024) + b"}", {}, 413),
    ],
)
def test_bad_webhook_changes_nothing(
    quiet: Stack, submitted: str, secret: str | None, body: Any, headers: dict[str, str], status: int
) -> None:
    before = quiet.job(submitted)
    sent = (
        {"X-Webhook-Secret": quiet.secret(submitted) if secret == "valid" else secret}
        if secret is not None
        else {}
    )
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{quiet.url}/webhooks/bfl/{submitted}", content=content, headers=sent | headers)
    assert response.status_code == status, response.text
    assert quiet.job(submitted) == before


def test_webhook_for_unknown_job_is_404(quiet: Stack) -> None:
    assert quiet.webhook("no-such-job", SUCCESS).status_code == 404


def test_webhook_secret_of_another_job_is_refused(quiet: Stack, submitted: str) -> None:
    other = quiet.submit()["id"]
    assert quiet.webhook(submitted, SUCCESS, secret=quiet.secret(other)).status_code == 401


@pytest.mark.parametrize("status", ["processing", "Pending", "Generating"])
def test_progress_webhook_is_acknowledged_and_changes_nothing(
    quiet: Stack, submitted: str, status: str
) -> None:
    before = quiet.job(submitted)
    response = quiet.webhook(submitted, {"task_id": before["bfl_task_id"], "status": status, "progress": 0.5})
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert quiet.job(submitted) == before


def test_signed_documented_webhook_completes_the_job(quiet: Stack, submitted: str) -> None:
    """A hand-made webhook in the documented shape, with a valid X-BFL-Signature, is accepted."""
    task_id = quiet.job(submitted)["bfl_task_id"]

    def get_result() -> dict[str, Any]:
        answer = httpx.get(
            f"{quiet.sim_url}/v1/get_result", params={"id": task_id}, headers={"x-key": SIM_KEY}
        )
        body: dict[str, Any] = answer.json()
        return body

    wait_until(lambda: get_result()["status"] == "Ready", 10, "the task to be ready upstream")
    body = json.dumps({"id": task_id, "status": "Ready", "result": get_result()["result"]}).encode()
    secret = quiet.secret(submitted)
    response = quiet.webhook(submitted, body, headers={"X-BFL-Signature": body_signature(secret, body)})
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    event = quiet.wait_event(submitted)
    assert event["type"] == "kontext.edit.completed" and event["data"]["via"] == "webhook"


def test_sample_from_a_host_not_allowed_is_refused(quiet: Stack, submitted: str) -> None:
    task_id = quiet.job(submitted)["bfl_task_id"]
    body = {"task_id": task_id, "status": "SUCCESS", "result": {"sample": "https://evil.example/x.jpg"}}
    assert quiet.webhook(submitted, body).status_code == 200
    event = quiet.wait_event(submitted)
    assert event["type"] == "kontext.edit.failed" and event["data"]["error"]["code"] == "sample_rejected"


def test_sample_that_is_not_an_image_is_refused(tmp_path: Path, quiet: Stack, submitted: str) -> None:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    fake = Starlette(
        routes=[Route("/x.jpg", lambda r: Response(b"<html>nope</html>", media_type="image/jpeg"))]
    )
    with serve(fake) as fake_url:
        task_id = quiet.job(submitted)["bfl_task_id"]
        body = {"task_id": task_id, "status": "SUCCESS", "result": {"sample": f"{fake_url}/x.jpg"}}
        assert quiet.webhook(submitted, body).status_code == 200
        event = quiet.wait_event(submitted)
    assert event["data"]["error"]["code"] == "sample_rejected"
    assert not (quiet.data / "images" / f"{submitted}.jpg").exists()


def test_large_valid_image_is_accepted(quiet: Stack) -> None:
    """Just under the caps goes through (the 413/422 limits are not off by one the wrong way)."""
    data = encode_image("JPEG", (2000, 1500))
    job = quiet.submit(image=base64.b64encode(data).decode())
    assert job["state"] == "created"


def test_webhook_about_another_task_changes_nothing_and_is_409(quiet: Stack, submitted: str) -> None:
    before = quiet.job(submitted)
    for status in ("SUCCESS", "Pending"):
        body = {
            "task_id": "someone-elses-task",
            "status": status,
            "result": {"sample": "http://127.0.0.1:1/x.jpg"},
        }
        response = quiet.webhook(submitted, body)
        assert response.status_code == 409, response.text
    assert quiet.job(submitted) == before
    assert all(e["id"] != submitted for e in quiet.events())


def test_confirmed_webhooks_ask_bfl_before_acting(tmp_path: Path) -> None:
    """RECEIVER_CONFIRM_WEBHOOKS: a forged 'done' for a task BFL still runs changes nothing; the real
    webhook, once BFL agrees, completes the job."""
    slow = dataclasses.replace(FAST_SIM, latency_s=1.5)
    with stack(tmp_path, slow, confirm_webhooks=True) as running:
        job_id = running.submit()["id"]
        job = running.wait_state(job_id, "submitted")
        forged = {
            "task_id": job["bfl_task_id"],
            "status": "SUCCESS",
            "result": {"sample": "http://127.0.0.1:1/x.jpg"},
        }
        polls = running.sim("/_sim/stats")["get_result"]
        response = running.webhook(job_id, forged)
        assert response.status_code == 200 and response.json()["status"] == "ignored", response.text
        assert running.job(job_id)["state"] == "submitted"
        assert running.sim("/_sim/stats")["get_result"] == polls + 1
        event = running.wait_event(job_id)
    assert event["type"] == "kontext.edit.completed" and event["data"]["via"] == "webhook"
