"""Events reach every sink at least once, with the same id, through sink outages; dead letters are
visible and can be re-sent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.integration.stack import Stack, stack
from tests.servers import serve, wait_until


@dataclass
class Consumer:
    """An HTTP event consumer whose answer the test switches: 200, or a status with Retry-After."""

    status: int = 200
    retry_after: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    content_types: set[str] = field(default_factory=set)

    async def handle(self, request: Request) -> Response:
        if self.status != 200:
            self.refused += 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return Response(status_code=self.status, headers=headers)
        self.content_types.add(request.headers["content-type"])
        self.received.append(json.loads(await request.body()))
        return Response(status_code=200)

    def ids(self) -> list[str]:
        return [event["id"] for event in self.received]


@contextmanager
def consumer_stack(tmp_path: Path, consumer: Consumer, **overrides: Any) -> Iterator[Stack]:
    app = Starlette(routes=[Route("/events", consumer.handle, methods=["POST"])])
    with serve(app) as consumer_url:
        sinks = (f"file://{tmp_path / 'events.jsonl'}", f"http://user:hunter2@{consumer_url[7:]}/events")
        with stack(tmp_path, sinks=sinks, **overrides) as running:
            yield running


def test_events_survive_an_http_sink_outage(tmp_path: Path) -> None:
    consumer = Consumer(status=503, retry_after="1")
    with consumer_stack(tmp_path, consumer) as running:
        ids = [running.submit()["id"] for _ in range(5)]
        for job_id in ids:
            running.wait_event(job_id)  # the file sink is not held up by the failing one
        wait_until(lambda: consumer.refused >= 5, 10, "the outage to be noticed")
        assert consumer.received == []
        jobs = {job_id: running.job(job_id) for job_id in ids}
        assert all(job["state"] == "stored" for job in jobs.values())  # not published while a sink lags
        consumer.status = 200
        wait_until(lambda: set(consumer.ids()) >= set(ids), 20, "every event after the recovery")
        for job_id in ids:
            running.wait_state(job_id, "published")
        file_events = {e["id"]: e for e in running.events()}
        for event in consumer.received:  # the very same event, in both sinks
            assert event == file_events[event["id"]]
        assert consumer.content_types == {"application/cloudevents+json; charset=utf-8"}
        sinks = [d["sink"] for d in running.job(ids[0])["deliveries"]]
        assert not any("hunter2" in sink for sink in sinks)  # credentials never shown


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    consumer = Consumer(status=429, retry_after="3")
    with consumer_stack(tmp_path, consumer) as running:
        job_id = running.submit()["id"]
        wait_until(lambda: consumer.refused >= 1, 10, "the first refusal")
        refused_at = time.monotonic()
        consumer.status = 200
        wait_until(lambda: consumer.ids() == [job_id], 15, "the delivery after Retry-After")
        assert time.monotonic() - refused_at >= 2.5
        assert consumer.refused == 1  # not retried before the sink's Retry-After


def test_a_refusing_sink_dead_letters_and_redeliver_resends(tmp_path: Path) -> None:
    consumer = Consumer(status=400)
    with consumer_stack(tmp_path, consumer) as running:
        job_id = running.submit()["id"]
        wait_until(lambda: running.client.get("/v1/jobs?delivery=dead").json()["jobs"], 15, "a dead letter")
        [dead] = running.client.get("/v1/jobs", params={"delivery": "dead"}).json()["jobs"]
        assert dead["id"] == job_id
        deliveries = {d["sink"].split(":")[0]: d for d in running.job(job_id)["deliveries"]}
        assert deliveries["http"]["state"] == "dead" and "400" in deliveries["http"]["last_error"]
        assert deliveries["file"]["state"] == "delivered"
        listing = subprocess.run(
            [sys.executable, "-m", "receiver", "jobs", "list", "--dead-letter"],
            env={"RECEIVER_STORE_URL": running.settings.store_url, "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert job_id in listing.stdout

        consumer.status = 200
        answer = running.client.post(f"/v1/jobs/{job_id}/redeliver")
        assert answer.status_code == 202
        wait_until(lambda: consumer.ids() == [job_id], 10, "the re-sent event")
        wait_until(lambda: running.events().count(running.events()[0]) == 2, 10, "the file sink's copy")
        assert running.client.get("/v1/jobs", params={"delivery": "dead"}).json()["jobs"] == []


def test_delivery_is_dead_lettered_after_the_configured_attempts(tmp_path: Path) -> None:
    consumer = Consumer(status=503)
    with consumer_stack(tmp_path, consumer, delivery_attempts=2) as running:
        job_id = running.submit()["id"]
        wait_until(lambda: running.client.get("/v1/jobs?delivery=dead").json()["jobs"], 20, "a dead letter")
        http = next(d for d in running.job(job_id)["deliveries"] if d["sink"].startswith("http"))
        assert (http["state"], http["attempts"]) == ("dead", 2)
        assert consumer.refused == 2 * 3  # two rounds, each with its quick in-process retries


def test_events_survive_a_file_sink_outage(tmp_path: Path) -> None:
    blocked = tmp_path / "events.jsonl"
    blocked.mkdir()  # the sink's file cannot be opened while a folder stands in its place
    with stack(tmp_path) as running:
        ids = [running.submit()["id"] for _ in range(3)]

        def failed_once(job_id: str) -> bool:
            deliveries = running.job(job_id)["deliveries"]
            return bool(deliveries) and all(d["last_error"] for d in deliveries)

        wait_until(lambda: all(failed_once(i) for i in ids), 15, "a failed try per event")
        assert all(running.job(i)["state"] == "stored" for i in ids)
        shutil.rmtree(blocked)
        for job_id in ids:
            running.wait_event(job_id, timeout=20)
            running.wait_state(job_id, "published")
        assert sorted(e["id"] for e in running.events()) == sorted(ids)


@pytest.mark.parametrize("sink", ["ftp://example.com/events", "redis-ish://x"])
def test_unknown_sink_scheme_is_a_clear_config_error(tmp_path: Path, sink: str) -> None:
    from receiver.errors import ConfigError
    from receiver.sinks import sink_from_url

    with pytest.raises(ConfigError, match="unknown sink URL scheme"):
        sink_from_url(sink)
