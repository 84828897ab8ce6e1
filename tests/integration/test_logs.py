"""Logs of a full flow, captured in the process (structlog `capture_logs`) and from a real process's
stderr: no key, token, webhook secret, DSN password or signed query string in any line, and every line
about a job names its job and its BFL task."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from structlog.testing import capture_logs

from receiver.logs import job_keys
from receiver.simulator import create_sim_app
from receiver.webhook_auth import WebhookSigner
from tests.integration.processes import SIGNING_KEY, receiver_env, receiver_process
from tests.integration.stack import FAST_SIM, IMAGE_B64, SIM_KEY, TOKEN, stack
from tests.servers import free_port, serve, wait_until
from tests.services import postgres_url

DSN_PASSWORD = "dsn-password-4f1c"
SINK_PASSWORD = "sink-password-9a2e"


@pytest.fixture
def sink_url() -> Iterator[str]:
    """An HTTP sink that takes every event, reached with credentials in its URL."""

    async def take(request: Request) -> Response:
        return Response(status_code=204)

    with serve(Starlette(routes=[Route("/events", take, methods=["POST"])])) as url:
        yield url.replace("http://", f"http://sink-user:{SINK_PASSWORD}@") + "/events"


def store_url() -> str:
    """The test PostgreSQL server with a password in the DSN (trust auth ignores it; logs must too)."""
    url = postgres_url().replace("postgresql://postgres@", f"postgresql://postgres:{DSN_PASSWORD}@")
    assert DSN_PASSWORD in url
    return f"{url}?schema=logs_{uuid.uuid4().hex[:12]}"


def secrets_in(text: str, *secrets: str) -> list[str]:
    return [secret for secret in (*secrets, DSN_PASSWORD, SINK_PASSWORD, "sig=") if secret in text]


def test_a_full_flow_in_process_logs_no_secret(tmp_path: Path, sink_url: str) -> None:
    sinks = (f"file://{tmp_path / 'events.jsonl'}", sink_url)
    with (
        capture_logs(processors=[structlog.contextvars.merge_contextvars, job_keys]) as logs,
        stack(tmp_path, store_url=store_url(), sinks=sinks, log_level="debug") as running,
    ):
        job_id = running.submit()["id"]
        job = running.wait_state(job_id, "published")
        webhook_secret = running.secret(job_id)
        signing_key = running.settings.signing_keys[0]
    assert {"job.created", "job.submitted", "webhook.accepted", "job.stored", "event.delivered"} <= {
        entry["event"] for entry in logs
    }
    assert secrets_in(repr(logs), TOKEN, SIM_KEY, signing_key, webhook_secret) == []
    about_job = [entry for entry in logs if entry.get("job_id") == job_id]
    assert all("bfl_task_id" in entry for entry in about_job)
    after_submit = [entry for entry in about_job if entry["event"] != "job.created"]
    assert {entry["bfl_task_id"] for entry in after_submit} == {job["bfl_task_id"]}


def test_the_stderr_of_a_receiver_process_is_json_lines_without_secrets(
    tmp_path: Path, sink_url: str
) -> None:
    with serve(create_sim_app(FAST_SIM)) as sim_url:
        port = free_port()
        env = receiver_env(
            sim_url,
            port,
            tmp_path,
            RECEIVER_STORE_URL=store_url(),
            RECEIVER_SINKS=f"file://{tmp_path / 'events.jsonl'},{sink_url}",
            RECEIVER_LOG_LEVEL="debug",  # every library's lines too (httpx logs each request's URL)
        )
        log = tmp_path / "receiver.log"
        with receiver_process(env, port, log) as receiver:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            answer = httpx.post(
                f"{receiver.url}/v1/edits", json={"prompt": "red", "image": IMAGE_B64}, headers=headers
            )
            job_id = answer.json()["id"]

            def job() -> dict[str, Any]:
                body: dict[str, Any] = httpx.get(f"{receiver.url}/v1/jobs/{job_id}", headers=headers).json()
                return body

            wait_until(lambda: job()["state"] == "published", 30, "the job to be published")
            task_id = job()["bfl_task_id"]
    lines: list[dict[str, Any]] = [json.loads(line) for line in log.read_text().splitlines()]  # all JSON
    loggers = {line.get("logger") for line in lines}
    assert {"uvicorn.error", "httpx", "receiver.pipeline"} <= loggers  # one renderer for every library
    webhook_secret = WebhookSigner((SIGNING_KEY,)).secret_for(job_id)
    assert secrets_in(log.read_text(), TOKEN, SIM_KEY, SIGNING_KEY, webhook_secret) == []
    assert any("?***" in line["event"] for line in lines if line.get("logger") == "httpx")  # URLs, scrubbed
    about_job = [line for line in lines if line.get("job_id") == job_id]  # httpx's lines of its work too
    assert about_job and all("bfl_task_id" in line for line in about_job)
    named = {"job.submitted", "webhook.accepted", "job.stored", "event.delivered"}
    assert {line["bfl_task_id"] for line in about_job if line["event"] in named} == {task_id}
