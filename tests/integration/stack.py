"""The simulator and a receiver, both under uvicorn on loopback, with helpers to drive them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from receiver.catalog import CATALOG, Catalog
from receiver.models import FINAL_STATES
from receiver.settings import Settings, SimSettings
from receiver.simulator import create_sim_app
from receiver.web.app import create_app
from receiver.web.protocol import HeaderDeadlineProtocol
from receiver.webhook_auth import WebhookSigner
from tests.images import base64_image
from tests.servers import free_port, serve, wait_until

TOKEN = "test-token"
SIM_KEY = "sim-key"
FAST_SIM = SimSettings(latency_s=0.05, webhook_retry_delays=(0.05, 0.1, 0.2), seed=7, api_keys=(SIM_KEY,))


IMAGE_B64 = base64_image("JPEG", (96, 64))


@dataclass
class Stack:
    sim_url: str
    url: str
    settings: Settings
    client: httpx.Client
    data: Path

    @property
    def events_path(self) -> Path:
        return self.data / "events.jsonl"

    def submit(self, headers: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
        """POST /v1/edits with a valid body (overridden by `fields`); expects 202."""
        response = self.post_edit(
            {"prompt": "Change the car color to red", "image": IMAGE_B64} | fields, headers
        )
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def post_edit(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.client.post("/v1/edits", json=body, headers=headers or {})

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        return jobs

    def wait_state(self, job_id: str, *states: str, timeout: float = 15.0) -> dict[str, Any]:
        wanted = set(states) or {s.value for s in FINAL_STATES}
        wait_until(lambda: self.job(job_id)["state"] in wanted, timeout, f"job {job_id} to reach {wanted}")
        return self.job(job_id)

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def wait_event(self, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
        wait_until(lambda: any(e["id"] == job_id for e in self.events()), timeout, f"event for job {job_id}")
        return next(e for e in self.events() if e["id"] == job_id)

    def sim(self, path: str) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.sim_url + path).json()
        return body

    def secret(self, job_id: str) -> str:
        return WebhookSigner(self.settings.signing_keys).secret_for(job_id)

    def webhook(
        self, job_id: str, body: Any, secret: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        sent = {"X-Webhook-Secret": secret if secret is not None else self.secret(job_id)} | (headers or {})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.url}/webhooks/bfl/{job_id}", content=content, headers=sent)


def receiver_settings(data: Path, sim_url: str, port: int, **overrides: Any) -> Settings:
    settings = Settings(
        bfl_api_url=sim_url,
        bfl_api_key=SIM_KEY,
        public_url=f"http://127.0.0.1:{port}",
        signing_keys=("signing-key-for-tests-1",),
        api_tokens=(TOKEN,),
        store_url=f"sqlite:///{data / 'receiver.db'}",
        blob_url=f"file://{data / 'images'}",
        sinks=(f"file://{data / 'events.jsonl'}",),
        sample_hosts=("127.0.0.1",),
        retry_base_s=0.01,
        log_level="warning",
    )
    return dataclasses.replace(settings, **overrides)


@contextmanager
def receiver(
    data: Path,
    sim_url: str,
    port: int | None = None,
    http: type[asyncio.Protocol] = HeaderDeadlineProtocol,
    *,
    clock: Callable[[], float] = time.time,
    catalog: Catalog = CATALOG,
    **overrides: Any,
) -> Iterator[Stack]:
    """A receiver (HTTP app + workers), served as `serve` does, in front of the simulator at `sim_url`."""
    port = port or free_port()
    settings = receiver_settings(data, sim_url, port, **overrides)
    with (
        serve(create_app(settings, clock=clock, catalog=catalog), port=port, http=http) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client,
    ):
        yield Stack(sim_url=sim_url, url=url, settings=settings, client=client, data=data)


@contextmanager
def stack(
    data: Path,
    sim: SimSettings = FAST_SIM,
    *,
    clock: Callable[[], float] = time.time,
    catalog: Catalog = CATALOG,
    **overrides: Any,
) -> Iterator[Stack]:
    """The simulator with `sim` settings and a receiver in front of it, both serving `catalog`; the
    receiver runs on `clock`."""
    with (
        serve(create_sim_app(sim, catalog=catalog)) as sim_url,
        receiver(data, sim_url, clock=clock, catalog=catalog, **overrides) as running,
    ):
        yield running
