"""PostgreSQL stops for 5 s in the middle of a run of edits with webhooks, then comes back: no 500,
nothing answered 2xx while it was down, no edit lost, one event per job, and the work resumes by
itself. The server is the test's own (see `private_postgres`), on a free loopback port."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import httpx

from tests.integration.private_postgres import private_postgres
from tests.integration.stack import FAST_SIM, IMAGE_B64, stack
from tests.servers import wait_until

EDITS = 24
OUTAGE_S = 5.0
# A webhook's retries (3.5 s in all) are shorter than the outage: one sent early in it is lost for good.
SIM = dataclasses.replace(FAST_SIM, latency_s=0.5, webhook_retry_delays=(0.5, 1.0, 2.0))


def test_a_postgres_outage_loses_nothing_and_answers_no_500(tmp_path: Path) -> None:
    with (
        private_postgres() as postgres,
        stack(
            tmp_path,
            SIM,
            store_url=postgres.url,
            store_timeout_s=2.0,
            lease_s=6.0,
            download_timeout_s=5.0,
            reconcile_after_s=3.0,
            retry_base_s=0.2,
        ) as running,
    ):
        answers: list[tuple[float, int]] = []  # (when, status) of every POST /v1/edits
        ids: set[str] = set()

        def submit_all() -> None:
            with httpx.Client(base_url=running.url, headers=dict(running.client.headers), timeout=30) as http:
                for n in range(EDITS):
                    body = {"prompt": f"Change the car color to red, take {n}", "image": IMAGE_B64}
                    while True:  # a client retries a 503 with the same Idempotency-Key
                        response = http.post("/v1/edits", json=body, headers={"Idempotency-Key": f"edit-{n}"})
                        answers.append((time.time(), response.status_code))
                        if response.status_code == 202:
                            ids.add(response.json()["id"])
                            break
                        assert response.status_code == 503, response.text
                        assert response.headers["Retry-After"].isdigit()
                        time.sleep(0.3)
                    time.sleep(0.25)

        client = threading.Thread(target=submit_all)
        client.start()
        wait_until(lambda: len(ids) >= 6, 30, "the first edits to be accepted")
        postgres.stop()
        down_at = time.time()
        wait_until(lambda: httpx.get(f"{running.url}/readyz").status_code == 503, 10, "/readyz to turn 503")
        time.sleep(OUTAGE_S)  # the outage itself
        up_at = time.time()
        postgres.start()
        client.join(120)
        assert not client.is_alive() and len(ids) == EDITS
        wait_until(lambda: httpx.get(f"{running.url}/readyz").status_code == 200, 30, "/readyz to recover")

        def all_final() -> bool:
            jobs = running.jobs()
            return len(jobs) == EDITS and all(job["outcome"] for job in jobs)

        wait_until(all_final, 120, "every edit to reach its outcome")
        # An outcome is committed with its event; the file sink gets the event just after.
        wait_until(lambda: {event["id"] for event in running.events()} >= ids, 30, "every event in the sink")
        jobs = {job["id"]: job for job in running.jobs()}
        events = running.events()
        webhooks = [
            hook
            for job in jobs.values()
            for hook in running.sim(f"/_sim/tasks/{job['bfl_task_id']}")["webhooks"]
        ]

    assert set(jobs) == ids  # nothing lost, nothing made twice
    assert all(job["outcome"] == "completed" for job in jobs.values())
    # One event per job (a sink may see it twice, at least once, always with the same id and type).
    assert {event["id"] for event in events} == ids
    assert len({(event["id"], event["type"]) for event in events}) == EDITS
    statuses = [status for _, status in answers] + [hook["status"] for hook in webhooks]
    assert 500 not in statuses and 503 in statuses
    # While the server was down nothing can have been committed, so nothing was answered 2xx.
    during = [status for at, status in answers if down_at + 0.5 < at < up_at]
    assert during and all(status == 503 for status in during)
    hooks_during = [hook["status"] for hook in webhooks if down_at + 0.5 < hook["at"] < up_at]
    assert all(status == 503 for status in hooks_during)
