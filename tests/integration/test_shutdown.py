"""SIGTERM: not ready at once, work in flight finished or released, and a restart resumes the rest."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.simulator import create_sim_app
from receiver.web.app import create_app
from receiver.web.server import ReceiverServer
from receiver.webhook_auth import WebhookSigner
from tests.images import encode_image
from tests.integration.processes import SIGNING_KEY, receiver_env, receiver_process
from tests.integration.stack import FAST_SIM, IMAGE_B64, TOKEN, receiver_settings
from tests.servers import free_port, serve, wait_until


@pytest.mark.parametrize(
    ("api", "workers"), [(True, True), (True, False), (False, True)], ids=["serve", "no-worker", "worker"]
)
def test_a_stop_signal_turns_readiness_off_at_once(tmp_path: Path, api: bool, workers: bool) -> None:
    app = create_app(receiver_settings(tmp_path, "http://127.0.0.1:9", 8080), api=api, workers=workers)
    with serve(app) as url:
        # The signal handler of the server `serve` runs, called as a signal would call it.
        server = ReceiverServer(uvicorn.Config(app), app)
        assert httpx.get(f"{url}/readyz").status_code == 200
        server.handle_exit(signal.SIGTERM, None)
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert httpx.get(f"{url}/healthz").status_code == 200  # alive, just not taking traffic
        assert server.should_exit


def test_sigterm_releases_claimed_work_and_a_restart_finishes_it(tmp_path: Path) -> None:
    # Slow enough that edits are still queued or in flight when the stop signal arrives.
    sim = dataclasses.replace(FAST_SIM, latency_s=0.5, max_active=4)
    with serve(create_sim_app(sim)) as sim_url:
        port = free_port()
        env = receiver_env(
            sim_url,
            port,
            tmp_path,
            RECEIVER_MAX_ACTIVE="4",
            RECEIVER_SHUTDOWN_GRACE_S="5",
            # Webhooks sent while the receiver is down are lost: the restart must poll for them soon.
            RECEIVER_RECONCILE_AFTER_S="1",
            RECEIVER_LOG_LEVEL="info",
            RECEIVER_LOG_JSON="false",
        )
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with receiver_process(env, port, tmp_path / "receiver.log") as receiver:
            ids = [
                httpx.post(
                    f"{receiver.url}/v1/edits",
                    json={"prompt": f"edit {i}", "image": IMAGE_B64},
                    headers=headers,
                ).json()["id"]
                for i in range(12)
            ]
            stopped_at = time.time()
            # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why.
            assert receiver.signal(signal.SIGTERM) == -signal.SIGTERM
            assert time.time() - stopped_at < 15
            log = (tmp_path / "receiver.log").read_text()
            assert "Application shutdown complete" in log and "worker.stopped" in log
            assert "Traceback" not in log  # the stop signal reached the background work cleanly

            with sqlite3.connect(tmp_path / "receiver.db") as db:
                rows = db.execute("SELECT state, due_at FROM jobs").fetchall()
            waiting = [(state, due_at) for state, due_at in rows if state in {"created", "received"}]
            assert waiting, "the test should stop the receiver with work left to do"
            assert all(due_at <= time.time() for _, due_at in waiting)  # no claim left to wait out
            assert not list((tmp_path / "images").glob(".*.part"))  # nothing half-written

            receiver.start()
            events = tmp_path / "events.jsonl"
            wait_until(
                lambda: events.exists() and len(events.read_text().splitlines()) >= len(ids),
                60,
                "every event",
            )
            published = {json.loads(line)["id"] for line in events.read_text().splitlines()}
            assert published == set(ids)


def test_work_still_running_after_the_grace_period_is_released(tmp_path: Path) -> None:
    """A download hangs past the grace period: it is cancelled, nothing half-written stays, and the
    claim is released, so the restarted receiver fetches the image at once instead of after its lease."""
    hang = {"first": True}
    released = threading.Event()  # set once the receiver is stopped, so the results server stops at once
    image = encode_image("PNG")

    async def sample(request: Request) -> Response:
        if hang["first"]:
            hang["first"] = False
            await anyio.to_thread.run_sync(released.wait, 60.0)
        return Response(image, media_type="image/png")

    results = Starlette(routes=[Route("/sample.png", sample)])
    quiet = dataclasses.replace(FAST_SIM, webhook_drop_rate=1.0)
    with serve(create_sim_app(quiet)) as sim_url, serve(results) as results_url:
        port = free_port()
        env = _logging_env(sim_url, port, tmp_path, grace_s=1)
        with receiver_process(env, port, tmp_path / "receiver.log") as receiver:
            job_id, secret, task_id = _submitted(receiver.url)
            body = {
                "task_id": task_id,
                "status": "SUCCESS",
                "result": {"sample": f"{results_url}/sample.png"},
            }
            answer = httpx.post(
                f"{receiver.url}/webhooks/bfl/{job_id}", json=body, headers={"X-Webhook-Secret": secret}
            )
            assert answer.status_code == 200
            wait_until(lambda: not hang["first"], 10, "the download to start (and hang)")
            receiver.signal(signal.SIGTERM)
            released.set()
            assert re.search(r"worker\.claims_released\s.*count=1", (tmp_path / "receiver.log").read_text())
            with sqlite3.connect(tmp_path / "receiver.db") as db:
                state, due_at = db.execute(
                    "SELECT state, due_at FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()
            assert state == "received" and due_at <= time.time()  # released, not held for a lease
            assert not list((tmp_path / "images").glob(".*.part"))
            receiver.start()
            wait_until(lambda: _state(receiver.url, job_id) == "published", 10, "the image after the restart")


def _logging_env(sim_url: str, port: int, data: Path, grace_s: float) -> dict[str, str]:
    """A receiver's environment that logs its shutdown (at info) with the given grace period."""
    return receiver_env(
        sim_url,
        port,
        data,
        RECEIVER_SHUTDOWN_GRACE_S=str(grace_s),
        RECEIVER_LOG_LEVEL="info",
        RECEIVER_LOG_JSON="0",
    )


def _submitted(url: str) -> tuple[str, str, str]:
    """An edit submitted upstream through the receiver at `url`: its job id, webhook secret and BFL
    task id."""
    answer = httpx.post(
        f"{url}/v1/edits",
        json={"prompt": "x", "image": IMAGE_B64},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    job_id: str = answer.json()["id"]
    wait_until(lambda: _state(url, job_id) == "submitted", 10, "the submit")
    job = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    return job_id, WebhookSigner([SIGNING_KEY]).secret_for(job_id), job["bfl_task_id"]


def _state(url: str, job_id: str) -> str:
    answer = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    state: str = answer.json()["state"]
    return state


def test_a_webhook_in_flight_at_sigterm_is_answered_and_kept(tmp_path: Path) -> None:
    """Headers sent, then SIGTERM, then the body: the request is still answered, and what it said kept."""
    quiet = dataclasses.replace(FAST_SIM, webhook_drop_rate=1.0)
    with serve(create_sim_app(quiet)) as sim_url:
        port = free_port()
        env = _logging_env(sim_url, port, tmp_path, grace_s=5)
        with receiver_process(env, port, tmp_path / "receiver.log") as receiver:
            job_id, secret, task_id = _submitted(receiver.url)
            body = json.dumps({"task_id": task_id, "status": "Error", "error": "boom"}).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                head = (
                    f"POST /webhooks/bfl/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: application/json\r\nX-Webhook-Secret: {secret}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                conn.sendall(head.encode())
                assert receiver.process is not None
                receiver.process.send_signal(signal.SIGTERM)
                wait_until(lambda: "Shutting down" in (tmp_path / "receiver.log").read_text(), 10, "the stop")
                conn.sendall(body)
                answer = conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            receiver.process.wait(timeout=30)
            receiver.process = None
            with sqlite3.connect(tmp_path / "receiver.db") as db:
                (state,) = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            assert state == "failed"  # the webhook's outcome was committed before its 200
