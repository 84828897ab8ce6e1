"""`serve --no-worker` and `worker` as real processes on one PostgreSQL store: the web process answers
the API and BFL's webhooks, the worker does everything else, and together they behave as one receiver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from receiver.simulator import create_sim_app
from tests.integration.processes import ReceiverProcess, receiver_env, receiver_process
from tests.integration.stack import FAST_SIM, IMAGE_B64, TOKEN
from tests.servers import free_port, serve, wait_until
from tests.services import postgres_url

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def web_and_worker(tmp_path: Path) -> Iterator[tuple[ReceiverProcess, ReceiverProcess]]:
    store_url = f"{postgres_url()}?schema=apart_{uuid.uuid4().hex[:12]}"
    web_port, worker_port = free_port(), free_port()
    with ExitStack() as stack:
        sim_url = stack.enter_context(serve(create_sim_app(FAST_SIM)))
        env = receiver_env(sim_url, web_port, tmp_path, RECEIVER_STORE_URL=store_url)
        # Each process gets only the secrets its part needs.
        web_env = {k: v for k, v in env.items() if k != "BFL_API_KEY"}
        worker_env = {k: v for k, v in env.items() if k != "RECEIVER_API_TOKENS"}
        web = stack.enter_context(
            receiver_process(web_env, web_port, tmp_path / "web.log", ("serve", "--no-worker"))
        )
        worker = stack.enter_context(
            receiver_process(worker_env, worker_port, tmp_path / "worker.log", ("worker",))
        )
        yield web, worker


def test_an_edit_is_received_by_the_web_process_and_finished_by_the_worker(
    tmp_path: Path, web_and_worker: tuple[ReceiverProcess, ReceiverProcess]
) -> None:
    web, _ = web_and_worker
    answer = httpx.post(
        f"{web.url}/v1/edits", json={"prompt": "red car", "image": IMAGE_B64}, headers=HEADERS
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]

    def job() -> dict[str, object]:
        body: dict[str, object] = httpx.get(f"{web.url}/v1/jobs/{job_id}", headers=HEADERS).json()
        return body

    wait_until(lambda: job()["state"] == "published", 30, "the job to be published")
    assert job()["via"] == "webhook"  # BFL's webhook reached the web process; the worker fetched
    events = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(events) == 1 and job_id in events[0]
    image = httpx.get(f"{web.url}/v1/jobs/{job_id}/image", headers=HEADERS)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"


def test_the_worker_answers_health_checks_and_metrics_only(
    web_and_worker: tuple[ReceiverProcess, ReceiverProcess],
) -> None:
    _, worker = web_and_worker
    assert httpx.get(f"{worker.url}/healthz").status_code == 200
    assert httpx.get(f"{worker.url}/readyz").json()["status"] == "ready"
    metrics = httpx.get(f"{worker.url}/metrics")
    assert metrics.status_code == 200 and "kontext_" in metrics.text
    for method, path in [("POST", "/v1/edits"), ("GET", "/v1/jobs"), ("POST", "/webhooks/bfl/x")]:
        assert httpx.request(method, f"{worker.url}{path}", headers=HEADERS).status_code == 404
