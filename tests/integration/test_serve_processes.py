"""`serve --processes N`: web and worker processes started and stopped together, none left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from receiver.simulator import create_sim_app
from tests.integration.processes import ReceiverProcess, receiver_env, receiver_process
from tests.integration.sse import Listener
from tests.integration.stack import FAST_SIM, IMAGE_B64, TOKEN
from tests.integration.test_metrics import Samples, scrape
from tests.servers import free_port, serve, wait_until
from tests.services import postgres_url

GRACE_S = 3


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def roles(pids: list[int]) -> list[str]:
    return sorted(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[3].decode() for pid in pids)


def gone(pids: list[int]) -> bool:
    """None of `pids` runs any more (a zombie not yet reaped by its parent counts as gone)."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            return False
    return True


def supervised(receiver: ReceiverProcess) -> list[int]:
    assert receiver.process is not None
    pids = children(receiver.process.pid)
    assert roles(pids) == ["web", "web", "worker"]
    return pids


def env_for(tmp_path: Path, sim_url: str, port: int, **overrides: str) -> dict[str, str]:
    return receiver_env(
        sim_url,
        port,
        tmp_path,
        **overrides,
        RECEIVER_SHUTDOWN_GRACE_S=str(GRACE_S),
        RECEIVER_LOG_LEVEL="info",
        RECEIVER_LOG_JSON="false",
    )


@contextmanager
def three_processes(tmp_path: Path, sim_url: str, **overrides: str) -> Iterator[ReceiverProcess]:
    """`serve --processes 3` (two web processes and a worker), its log in `r.log`."""
    port = free_port()
    env = env_for(tmp_path, sim_url, port, **overrides)
    with receiver_process(env, port, tmp_path / "r.log", processes=3) as receiver:
        yield receiver


def submit(url: str, count: int) -> list[str]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answers = [
        httpx.post(f"{url}/v1/edits", json={"prompt": f"edit {n}", "image": IMAGE_B64}, headers=headers)
        for n in range(count)
    ]
    assert {answer.status_code for answer in answers} == {202}
    return [answer.json()["id"] for answer in answers]


def events(path: Path) -> set[str]:
    return {json.loads(line)["id"] for line in path.read_text().splitlines()} if path.exists() else set()


def job_states(data: Path) -> list[str]:
    with sqlite3.connect(data / "receiver.db") as db:
        return [state for (state,) in db.execute("SELECT state FROM jobs")]


def test_edits_complete_through_web_and_worker_processes(tmp_path: Path) -> None:
    """Webhooks answered by the web processes, images fetched and events published by the worker."""
    with serve(create_sim_app(FAST_SIM)) as sim_url, three_processes(tmp_path, sim_url) as receiver:
        supervised(receiver)
        ids = submit(receiver.url, 10)
        wait_until(lambda: events(tmp_path / "events.jsonl") == set(ids), 60, "every event")
        wait_until(lambda: set(job_states(tmp_path)) == {"published"}, 10, "every job published")


def test_a_stream_learns_what_the_worker_process_published(tmp_path: Path) -> None:
    """The worker commits `published` in another process than the stream's: with heartbeats a minute
    apart, it still reaches the stream well before the next one."""
    slow = {"RECEIVER_SSE_HEARTBEAT_S": "60"}
    with serve(create_sim_app(FAST_SIM)) as sim_url, three_processes(tmp_path, sim_url, **slow) as r:
        stream = Listener(r.url, params={"after": "0"})
        for job_id in submit(r.url, 3):
            stream.wait_state(job_id, "published", timeout=20)


def test_a_sigkill_of_the_supervisor_leaves_no_process_behind(tmp_path: Path) -> None:
    with serve(create_sim_app(FAST_SIM)) as sim_url, three_processes(tmp_path, sim_url) as receiver:
        pids = supervised(receiver)
        submit(receiver.url, 5)  # with work in flight
        assert receiver.signal(signal.SIGKILL) == -signal.SIGKILL
        wait_until(lambda: gone(pids), 10, "every process of the killed serve to end")
        # And the port is free again for a restart.
        receiver.start()
        supervised(receiver)


def test_sigterm_drains_every_process_within_the_grace_period(tmp_path: Path) -> None:
    # BFL keeps every task pending past the test, so with no more active than it takes, the stop finds
    # four edits submitted and four waiting for their turn, however slowly the machine runs.
    slow = dataclasses.replace(FAST_SIM, latency_s=600, max_active=4)
    with serve(create_sim_app(slow)) as sim_url:
        log = tmp_path / "r.log"
        with three_processes(tmp_path, sim_url, RECEIVER_MAX_ACTIVE="4") as receiver:
            pids = supervised(receiver)
            submit(receiver.url, 8)
            wait_until(lambda: job_states(tmp_path).count("submitted") == 4, 30, "four edits submitted")
            stopped_at = time.monotonic()
            assert receiver.signal(signal.SIGTERM) == -signal.SIGTERM
            assert time.monotonic() - stopped_at < GRACE_S + 5
            assert gone(pids)
            text = log.read_text()
            assert text.count("Application shutdown complete") == 2  # each web process drained
            assert "worker.stopped" in text and "serve.stopped" in text and "serve.process_killed" not in text
            with sqlite3.connect(tmp_path / "receiver.db") as db:
                rows = db.execute("SELECT state, due_at FROM jobs").fetchall()
            waiting = [due_at for state, due_at in rows if state == "created"]
            assert len(waiting) == 4
            assert all(due_at <= time.time() for due_at in waiting)  # claims released, none to wait out


def test_a_process_that_dies_stops_the_others(tmp_path: Path) -> None:
    with serve(create_sim_app(FAST_SIM)) as sim_url, three_processes(tmp_path, sim_url) as receiver:
        pids = supervised(receiver)
        os.kill(pids[0], signal.SIGKILL)
        assert receiver.process is not None
        assert receiver.process.wait(timeout=GRACE_S + 15) == 1
        receiver.process = None
        assert gone(pids)
        assert "serve.process_exited" in (tmp_path / "r.log").read_text()


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of metric `name` over the series that have `labels` (and any others)."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, series), value in samples.items()
        if sample == f"kontext_receiver_{name}" and wanted <= series
    )


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_metrics_add_up_every_process_whichever_web_process_answers(tmp_path: Path, store: str) -> None:
    """Counters of the web and the worker processes alike, each counted once on every scrape (each a new
    connection, taken by either web process); the store's jobs counted once; the shared directory under
    the temp directory, and gone after the stop."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    overrides = {"TMPDIR": str(temp), "RECEIVER_METRICS_STORE_TTL_S": "0"}
    if store == "postgres":
        overrides["RECEIVER_STORE_URL"] = f"{postgres_url()}?schema=metrics_{uuid.uuid4().hex[:12]}"
    edits = 6
    with (
        serve(create_sim_app(FAST_SIM)) as sim_url,
        three_processes(tmp_path, sim_url, **overrides) as receiver,
    ):
        supervised(receiver)
        [shared] = temp.glob("kontext-receiver-metrics-*")
        ids = submit(receiver.url, edits)
        wait_until(lambda: events(tmp_path / "events.jsonl") == set(ids), 60, "every event")

        def settled() -> bool:
            samples = scrape(receiver.url)
            published = total(samples, "job_transitions_total", from_state="stored", to_state="published")
            return published == edits and total(samples, "jobs", state="published") == edits

        wait_until(settled, 20, "every job counted published")  # (the store's gauges at least every 1 s)
        for _ in range(8):
            samples = scrape(receiver.url)
            assert total(samples, "edits_total") == edits  # web processes
            assert total(samples, "webhooks_total", outcome="accepted") == edits
            assert total(samples, "submits_total", outcome="accepted") == edits  # the worker process
            assert total(samples, "submit_seconds_count") == edits
            assert total(samples, "downloads_total", outcome="stored") == edits
            assert total(samples, "deliveries_total", outcome="delivered") == edits
            assert total(samples, "credits_total") > 0
            assert total(samples, "jobs") == total(samples, "jobs", state="published") == edits
        assert {path.name.split("_")[0] for path in shared.glob("*.db")} >= {"counter", "histogram", "gauge"}
        assert receiver.signal(signal.SIGTERM) == -signal.SIGTERM
    assert not shared.exists()
