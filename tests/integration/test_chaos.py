"""Nothing is lost and nothing is reported twice while webhooks are dropped and duplicated, downloads
fail, and receivers are killed with SIGKILL at random moments; and BFL never sees more tasks active
than the account allows (24, 6 of them kontext-max), however many processes submit.

Each run prints one summary line: edits, events, lost, duplicates (extra deliveries of the same event),
and the most tasks the simulator had active at once. The moments are drawn from a seeded RNG, printed
with the summary, so a failure can be replayed.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver.catalog import CATALOG
from receiver.settings import Settings, SimSettings
from receiver.simulator import create_sim_app
from tests.integration.balancer import balancer
from tests.integration.processes import ReceiverProcess, receiver_env, receiver_process
from tests.integration.stack import IMAGE_B64, SIM_KEY, TOKEN
from tests.servers import free_port, serve, wait_until
from tests.services import postgres_url

pytestmark = pytest.mark.chaos

EDITS = 300
SEED = 20261121
CHAOS_SIM = SimSettings(
    api_keys=(SIM_KEY,),
    latency_s=1.0,  # long enough for the queue to fill every upstream slot
    webhook_drop_rate=0.1,
    webhook_duplicate_rate=0.2,
    download_error_rate=0.05,
    webhook_retry_delays=(0.2, 0.5, 1.0),
    seed=SEED,
)
# Fast recovery so the run takes seconds: lost webhooks polled after 2 s, a dead worker's claims
# taken over after 3 s.
FAST_RECOVERY = {
    "RECEIVER_RECONCILE_AFTER_S": "2",
    "RECEIVER_LEASE_S": "3",
    "RECEIVER_DOWNLOAD_TIMEOUT_S": "3",  # a lease never shorter than a download may take
    "RECEIVER_RETRY_BASE_S": "0.1",
}


class Backend:
    """The load: submits edits with idempotency keys, retrying while a receiver is down."""

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}  # idempotency key -> job id
        self.http = httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)

    def submit(self, url: Callable[[], str], number: int) -> None:
        key = f"edit-{number}"
        model = "flux-kontext-max" if number % 3 == 0 else "flux-kontext-pro"

        def sent() -> bool:
            try:
                answer = self.http.post(
                    f"{url()}/v1/edits",
                    json={
                        "prompt": f"Change the car color to red ({key})",
                        "image": IMAGE_B64,
                        "model": model,
                    },
                    headers={"Idempotency-Key": key},
                )
            except httpx.TransportError:
                return False  # the receiver is down or was killed mid-request: try again, same key
            if answer.status_code == 502:
                return False  # the same, behind a load balancer
            assert answer.status_code == 202, (answer.status_code, answer.text)
            self.jobs[key] = answer.json()["id"]
            return True

        wait_until(sent, 30, f"edit {key} to be accepted")


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.endswith(b"}")]


def check(events_path: Path, job_ids: set[str], sim_url: str, label: str) -> None:
    """Every edit has its event, one distinct event per job, and the stored image is what BFL served."""
    wait_until(lambda: job_ids <= {e["id"] for e in read_events(events_path)}, 180, "an event for every edit")
    events = read_events(events_path)
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_job[event["id"]].append(event)
    lost = len(job_ids - by_job.keys())
    duplicates = len(events) - len(by_job)
    stats = httpx.get(f"{sim_url}/_sim/stats").json()
    summary = (
        f"edits={len(job_ids)} events={len(events)} lost={lost} duplicates={duplicates}"
        f" peak_active={stats['peak_active']} peak_active_kontext_max={stats['peak_active_kontext_max']}"
        f" refused={stats['rejected']}"
    )
    print(f"chaos[{label}] seed={SEED}: {summary}")
    assert lost == 0
    limits = Settings()
    assert stats["peak_active"] <= limits.max_active
    assert stats["peak_active_kontext_max"] <= limits.max_active_for(CATALOG["flux-kontext-max"])
    assert stats["rejected"] == 0  # not one 429: the limits held in every process
    assert set(by_job) == job_ids  # no event for anything that was not submitted
    for job_id, copies in by_job.items():
        assert all(copy == copies[0] for copy in copies), f"job {job_id} was reported differently"
        event = copies[0]
        assert (event["subject"], event["type"]) == (job_id, "kontext.edit.completed")
        image = event["data"]["image"]
        stored = Path(image["url"].removeprefix("file://")).read_bytes()
        served = httpx.get(f"{sim_url}/_sim/tasks/{event['data']['bfl_task_id']}").json()["sha256"]
        assert hashlib.sha256(stored).hexdigest() == image["sha256"] == served


def round_robin(alive: list[ReceiverProcess], turn: int) -> Callable[[], str]:
    """The URL of the receiver whose turn it is, among those still alive when asked."""
    return lambda: alive[turn % len(alive)].url


@pytest.fixture
def sim_url() -> Iterator[str]:
    with serve(create_sim_app(CHAOS_SIM)) as url:
        yield url


def test_chaos_sqlite_receiver_killed_twice(tmp_path: Path, sim_url: str) -> None:
    rng = random.Random(SEED)
    port = free_port()
    env = receiver_env(sim_url, port, tmp_path, **FAST_RECOVERY)
    events_path = tmp_path / "events.jsonl"
    first_kill_after = rng.randrange(50, EDITS - 50)  # edits submitted
    second_kill_at = rng.randrange(EDITS // 3, EDITS - 30)  # events published
    backend = Backend()
    with receiver_process(env, port, tmp_path / "receiver.log") as receiver:

        def kill_and_restart() -> None:
            receiver.kill()
            receiver.start()

        for number in range(EDITS):
            backend.submit(lambda: receiver.url, number)
            if number == first_kill_after:
                kill_and_restart()
        wait_until(
            lambda: len(read_events(events_path)) >= second_kill_at, 120, "events before the second kill"
        )
        kill_and_restart()
        check(events_path, set(backend.jobs.values()), sim_url, "sqlite")
    assert len(backend.jobs) == EDITS


def test_chaos_two_receivers_on_postgres_one_killed(tmp_path: Path, sim_url: str) -> None:
    rng = random.Random(SEED + 1)
    store_url = f"{postgres_url()}?schema=chaos_{uuid.uuid4().hex[:12]}"
    events_path = tmp_path / "events.jsonl"
    backend = Backend()
    with ExitStack() as stack:
        receivers = []
        for name in ("a", "b"):
            port = free_port()
            env = receiver_env(sim_url, port, tmp_path, RECEIVER_STORE_URL=store_url, **FAST_RECOVERY)
            receivers.append(
                stack.enter_context(receiver_process(env, port, tmp_path / f"receiver-{name}.log"))
            )
        doomed, survivor = receivers
        kill_after = rng.randrange(50, EDITS - 50)
        alive = [doomed, survivor]
        for number in range(EDITS):
            backend.submit(round_robin(alive, number), number)
            if number == kill_after:
                doomed.kill()  # its jobs in flight, its claims and its webhooks: all left to the survivor
                alive.remove(doomed)
        check(events_path, set(backend.jobs.values()), sim_url, "postgres")
    assert len(backend.jobs) == EDITS


def test_chaos_two_web_processes_and_a_worker_on_postgres(tmp_path: Path, sim_url: str) -> None:
    """Kubernetes' layout: web processes behind a Service (here a balancer), one worker apart. One web
    process is killed for good, the worker is killed and restarted."""
    rng = random.Random(SEED + 2)
    store_url = f"{postgres_url()}?schema=chaos_{uuid.uuid4().hex[:12]}"
    events_path = tmp_path / "events.jsonl"
    backend = Backend()
    web_ports = [free_port(), free_port()]
    with ExitStack() as stack:
        service = stack.enter_context(serve(balancer([f"http://127.0.0.1:{port}" for port in web_ports])))

        def env(port: int) -> dict[str, str]:
            settings = receiver_env(sim_url, port, tmp_path, RECEIVER_STORE_URL=store_url, **FAST_RECOVERY)
            return settings | {"RECEIVER_PUBLIC_URL": service}  # BFL calls the Service, not a process

        doomed, _ = [
            stack.enter_context(
                receiver_process(env(port), port, tmp_path / f"web-{port}.log", ("serve", "--no-worker"))
            )
            for port in web_ports
        ]
        worker_port = free_port()
        worker = stack.enter_context(
            receiver_process(env(worker_port), worker_port, tmp_path / "worker.log", ("worker",))
        )
        kill_web_after = rng.randrange(50, EDITS - 50)
        kill_worker_after = rng.randrange(50, EDITS - 50)
        for number in range(EDITS):
            backend.submit(lambda: service, number)
            if number == kill_web_after:
                doomed.kill()  # its requests in flight fail; the Service sends the next ones elsewhere
            if number == kill_worker_after:
                worker.kill()  # its claims lapse; the restarted worker takes them over
                worker.start()
        check(events_path, set(backend.jobs.values()), sim_url, "postgres-web-worker")
    assert len(backend.jobs) == EDITS
