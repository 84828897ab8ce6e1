"""`GET /v1/events` against a real receiver: order, filters, auth, limits, heartbeats, resumption."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.settings import SimSettings
from receiver.simulator import create_sim_app
from tests.integration.processes import receiver_env, receiver_process
from tests.integration.sse import Listener, listening
from tests.integration.stack import IMAGE_B64, SIM_KEY, TOKEN, stack
from tests.servers import free_port, serve, wait_until
from tests.services import postgres_url

LIFE = ["submitted", "received", "stored", "published"]
QUICK: dict[str, Any] = {"heartbeat_s": 0.2}


def test_a_stream_shows_every_state_of_an_edit_and_its_event_in_order(tmp_path: Path) -> None:
    with stack(tmp_path, **QUICK) as running, listening(running.url) as stream:
        assert stream.status == 200
        assert stream.response_headers is not None
        assert stream.response_headers["content-type"].startswith("text/event-stream")
        job_id = running.submit()["id"]
        stream.wait_state(job_id, "published")
        assert stream.states(job_id) == ["created", *LIFE]
        [event] = [m for m in stream.messages if m.event == "kontext.edit.completed"]
        assert json.loads(event.data) == running.wait_event(job_id)  # the CloudEvent the sinks got
        ids = [int(m.id or 0) for m in stream.messages]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        deliveries = [json.loads(m.data) for m in stream.messages if m.event == "kontext.delivery.state"]
        assert deliveries == [{"job_id": job_id, "state": "delivered", "sink": running.settings.sinks[0]}]


def test_filters_by_job_and_type_and_a_job_stream_starts_at_its_beginning(tmp_path: Path) -> None:
    with stack(tmp_path, **QUICK) as running:
        first, second = running.submit()["id"], running.submit()["id"]
        running.wait_state(first, "published")
        running.wait_state(second, "published")
        with listening(running.url, params={"job": first}) as stream:
            wait_until(lambda: len(stream.states(first)) == 5, 10, "the job's whole history")
            assert {d["job_id"] if "job_id" in d else d["subject"] for d in stream.data()} == {first}
        types = "kontext.edit.completed,kontext.edit.failed"
        with listening(running.url, params={"type": types, "after": "0"}) as stream:
            wait_until(lambda: len(stream.messages) == 2, 10, "both completion events")
            assert {m.event for m in stream.messages} == {"kontext.edit.completed"}
            assert sorted(json.loads(m.data)["id"] for m in stream.messages) == sorted([first, second])


def test_a_client_resumes_with_last_event_id_and_misses_nothing(tmp_path: Path) -> None:
    with stack(tmp_path, **QUICK) as running:
        with listening(running.url) as first:
            job_id = running.submit()["id"]
            first.wait_state(job_id, "submitted")
        seen = first.messages
        with listening(running.url, headers={"Last-Event-ID": seen[-1].id or ""}) as second:
            second.wait_state(job_id, "published")
        states = first.states(job_id) + second.states(job_id)
        assert states == ["created", *LIFE]


def test_auth_bad_resume_ids_and_the_stream_limit(tmp_path: Path) -> None:
    with stack(tmp_path, max_streams=1, **QUICK) as running:
        url = f"{running.url}/v1/events"
        assert httpx.get(url).status_code == 401
        wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        bad = running.client.get("/v1/events", headers={"Last-Event-ID": "seven"})
        assert bad.status_code == 422
        with listening(running.url) as only:
            assert only.status == 200
            refused = running.client.get("/v1/events")
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert "RECEIVER_MAX_STREAMS" in refused.json()["detail"]
        wait_until(lambda: _answered(running.url) == 200, 10, "the slot to be given back")


def _answered(url: str) -> int | None:
    """The status a new stream is answered with; the stream is closed again, so it holds no slot."""
    listener = Listener(url)
    listener.close()
    return listener.status


def test_an_idle_stream_gets_heartbeats(tmp_path: Path) -> None:
    with stack(tmp_path, heartbeat_s=0.05) as running, listening(running.url) as stream:
        wait_until(lambda: stream.lines.count(": heartbeat") >= 3, 10, "three heartbeats")
        assert stream.messages == []


@pytest.fixture
def sim_url() -> Iterator[str]:
    with serve(create_sim_app(SimSettings(api_keys=(SIM_KEY,), latency_s=0.3, seed=3))) as url:
        yield url


def test_a_stream_cut_mid_run_resumes_on_another_process_of_the_same_postgres_store(
    tmp_path: Path, sim_url: str
) -> None:
    store_url = f"{postgres_url()}?schema=sse_{uuid.uuid4().hex[:12]}"
    ports = [free_port(), free_port()]
    envs = [
        receiver_env(sim_url, port, tmp_path, RECEIVER_STORE_URL=store_url, RECEIVER_SSE_HEARTBEAT_S="0.2")
        for port in ports
    ]
    with (
        receiver_process(envs[0], ports[0], tmp_path / "a.log") as a,
        receiver_process(envs[1], ports[1], tmp_path / "b.log") as b,
        httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
    ):
        before = Listener(a.url)
        ids = []
        for number in range(12):
            target = (a, b)[number % 2]
            body = {"prompt": f"Change the car color to red ({number})", "image": IMAGE_B64}
            ids.append(http.post(f"{target.url}/v1/edits", json=body).json()["id"])
            if number == 5:
                before.wait_state(ids[0], "submitted")
                before.close()  # cut mid-run: most edits are still in flight
        after = Listener(b.url, headers={"Last-Event-ID": before.messages[-1].id or ""})
        try:
            for job_id in ids:
                after.wait_state(job_id, "published", timeout=30)
        finally:
            after.close()
    messages = before.messages + after.messages
    keys = [(m.id, m.data) for m in messages]
    assert len(keys) == len(set(keys))  # nothing twice
    for job_id in ids:
        assert before.states(job_id) + after.states(job_id) == ["created", *LIFE]  # nothing missed
    completed = [json.loads(m.data)["id"] for m in messages if m.event == "kontext.edit.completed"]
    assert sorted(completed) == sorted(ids)
