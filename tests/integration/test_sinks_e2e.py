"""Edits through the simulator with every kind of sink at once, on the real servers: each event read
back from each; a broker unreachable for a while while the others get every event at once, and all of
it after it is back; an HTTP sink that never answers does not hold back downloads."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from standardwebhooks.webhooks import Webhook

from receiver.sinks import sink_from_url
from tests.contract import sink_endpoints as ep
from tests.contract.sink_endpoints import Endpoint
from tests.integration.stack import FAST_SIM, Stack, stack
from tests.proxy import TcpProxy, tcp_proxy
from tests.servers import wait_until
from tests.services import amqp_url, mqtt_url, nats_url, redis_url

BROKERS = ("redis", "nats", "amqp", "mqtt")
SIM = dataclasses.replace(FAST_SIM, moderate_words=("forbidden",))


@contextmanager
def broker_endpoints(portal: BlockingPortal) -> Iterator[dict[str, Endpoint]]:
    """A fresh place on each real server (and a local HTTP consumer), read through `portal`'s loop."""
    openers: dict[str, AbstractAsyncContextManager[Endpoint]] = {
        "http": ep.http_endpoint(),
        "redis": ep.redis_endpoint(redis_url()),
        "nats": ep.nats_endpoint(nats_url()),
        "amqp": ep.amqp_endpoint(amqp_url()),
        "mqtt": ep.mqtt_endpoint(mqtt_url()),
    }
    with ExitStack() as opened:
        yield {
            name: opened.enter_context(portal.wrap_async_context_manager(o)) for name, o in openers.items()
        }


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("asyncio") as running:
        yield running


def received_ids(portal: BlockingPortal, endpoint: Endpoint) -> list[str]:
    return [str(ep.structured(r)["id"]) for r in portal.call(endpoint.received)]


def name_of(url: str) -> str:
    return sink_from_url(url).name


def sinks_stack(tmp_path: Path, urls: dict[str, str], **overrides: Any) -> Any:
    sinks = (f"file://{tmp_path / 'events.jsonl'}", *urls.values())
    return stack(tmp_path, SIM, sinks=sinks, http_sink_secret=ep.HTTP_SECRET, **overrides)


def submit_edits(running: Stack, count: int) -> list[str]:
    ids = [running.submit()["id"] for _ in range(count - 1)]
    return [*ids, running.submit(prompt="a forbidden edit")["id"]]  # a moderated outcome as well


def test_every_event_reaches_all_six_sinks(tmp_path: Path, portal: BlockingPortal) -> None:
    with broker_endpoints(portal) as endpoints:
        urls = {name: endpoint.url() for name, endpoint in endpoints.items()}
        with sinks_stack(tmp_path, urls) as running:
            ids = submit_edits(running, 4)
            for job_id in ids:
                running.wait_state(job_id, "published", "moderated")
            wait_until(lambda: all(running.job(i)["deliveries"][0]["delivered_at"] for i in ids), 15, "all")
            published = {event["id"]: event for event in running.events()}
            assert sorted(published) == sorted(ids)
            assert {e["type"] for e in published.values()} == {
                "kontext.edit.completed",
                "kontext.edit.moderated",
            }
            for name, endpoint in endpoints.items():
                wait_until(lambda: len(received_ids(portal, endpoint)) >= len(ids), 15, name)  # noqa: B023
                received = portal.call(endpoint.received)
                assert sorted(str(ep.structured(r)["id"]) for r in received) == sorted(ids), name
                for item in received:  # the very event the file sink has, read as a CloudEvent
                    event = published[str(ep.structured(item)["id"])]
                    assert ep.structured(item) == event
                    if name == "http":
                        assert Webhook(ep.HTTP_SECRET).verify(item.body, item.meta) == event
            deliveries = running.job(ids[0])["deliveries"]
            assert sorted(d["sink"] for d in deliveries) == sorted(
                [f"file://{tmp_path / 'events.jsonl'}", *(name_of(url) for url in urls.values())]
            )
            assert all(d["state"] == "delivered" and d["attempts"] == 1 for d in deliveries)
            shown = subprocess.run(
                [sys.executable, "-m", "receiver", "jobs", "show", ids[0]],
                env={"RECEIVER_STORE_URL": running.settings.store_url, "PATH": "/usr/bin:/bin"},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                check=True,
            )
            assert json.loads(shown.stdout)["deliveries"] == deliveries  # the CLI shows the same per sink


@pytest.mark.parametrize("broker", BROKERS)
def test_a_broker_outage_delays_only_that_broker(tmp_path: Path, portal: BlockingPortal, broker: str) -> None:
    with broker_endpoints(portal) as endpoints, ExitStack() as proxied:
        direct = urlparse_port(endpoints[broker].url())
        proxy: TcpProxy = proxied.enter_context(tcp_proxy("127.0.0.1", direct))
        proxy.down()  # unreachable from before the receiver starts: start-up must not need it
        urls = {name: e.url(proxy.port if name == broker else None) for name, e in endpoints.items()}
        down = name_of(urls[broker])
        with sinks_stack(tmp_path, urls, sink_timeout_s=2.0) as running:
            ids = submit_edits(running, 4)
            others = {name: e for name, e in endpoints.items() if name != broker}
            for name, endpoint in others.items():  # every other sink gets every event meanwhile
                wait_until(lambda: sorted(received_ids(portal, endpoint)) == sorted(ids), 15, name)  # noqa: B023
            assert received_ids(portal, endpoints[broker]) == []
            ready = running.client.get("/readyz")
            assert ready.status_code == 200, ready.text  # the receiver stays in its Service
            assert ready.json()["sinks"][down]["reachable"] is False
            assert all(s["reachable"] for name, s in ready.json()["sinks"].items() if name != down)
            wait_until(lambda: any(_tried(running, i, down) for i in ids), 15, "a failed try recorded")
            pending = [d for i in ids for d in running.job(i)["deliveries"] if d["sink"] == down]
            assert {d["state"] for d in pending} == {"pending"} and all(
                d["delivered_at"] is None for d in pending
            )
            assert {running.job(i)["state"] for i in ids} == {"stored", "moderated"}
            assert running.client.post("/webhooks/bfl/no-such-job", json={}).status_code in {401, 404}

            proxy.up()
            wait_until(
                lambda: set(received_ids(portal, endpoints[broker])) == set(ids),
                30,
                f"{broker} after the outage",
            )
            for job_id in ids:
                running.wait_state(job_id, "published", "moderated")
            wait_until(lambda: all(_delivered(running, i, down) for i in ids), 15, "deliveries recorded")
            if broker == "nats":  # JetStream drops a re-sent copy: exactly one message per event
                assert sorted(received_ids(portal, endpoints[broker])) == sorted(ids)


def _tried(running: Stack, job_id: str, sink: str) -> bool:
    return any(d["sink"] == sink and d["last_error"] for d in running.job(job_id)["deliveries"])


def _delivered(running: Stack, job_id: str, sink: str) -> bool:
    return any(d["sink"] == sink and d["state"] == "delivered" for d in running.job(job_id)["deliveries"])


def urlparse_port(url: str) -> int:
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    assert port is not None
    return port


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """An HTTP sink that takes connections and never answers (the kernel accepts them; nobody reads)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/events"


def test_a_hanging_http_sink_does_not_hold_back_downloads(tmp_path: Path) -> None:
    with silent_endpoint() as hanging:
        sinks = (f"file://{tmp_path / 'events.jsonl'}", hanging)
        # Each try at the hanging sink waits two minutes; with two download slots, 20 edits that had
        # to wait for it would take many minutes, not the seconds allowed below.
        overrides: dict[str, Any] = {
            "sink_timeout_s": 120.0,
            "download_concurrency": 2,
            "shutdown_grace_s": 1.0,
        }
        with stack(tmp_path, SIM, sinks=sinks, **overrides) as running:
            ids = [running.submit()["id"] for _ in range(20)]
            for job_id in ids:
                running.wait_event(job_id, timeout=30)
            jobs = [running.job(job_id) for job_id in ids]
            assert all(job["state"] == "stored" for job in jobs)  # not published: one sink has not got it
            http = [d for job in jobs for d in job["deliveries"] if d["sink"].startswith("http")]
            assert len(http) == 20 and all(d["delivered_at"] is None for d in http)
            assert json.loads(httpx.get(f"{running.url}/readyz").text)["status"] == "ready"
