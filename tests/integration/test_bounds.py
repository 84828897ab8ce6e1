"""Bounded resources: upload slots (503), the queue of jobs waiting upstream (429), a body read
timeout that cuts a client off however slowly it trickles in (408), and clients that go away
mid-body."""

from __future__ import annotations

import contextlib
import dataclasses
import select
import socket
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from structlog.testing import capture_logs

from receiver.web.protocol import HeaderDeadlineProtocol
from tests.integration.stack import FAST_SIM, IMAGE_B64, TOKEN, Stack, stack
from tests.servers import wait_until


@contextmanager
def trickling_edit(
    running: Stack,
    length: int = 1000,
    path: str = "/v1/edits",
    headers: str = f"Authorization: Bearer {TOKEN}",
) -> Iterator[socket.socket]:
    """An edit (or another POST to `path`) whose body is announced but (so far) not sent."""
    parts = urlsplit(running.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{headers}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"{")
    try:
        yield sock
    finally:
        sock.close()


def probe(running: Stack) -> int:
    """An edit refused as invalid when it gets a slot: it never creates a job. It comes on a connection
    of its own, accepted after the trickling edit's: on a kept-alive one it could overtake that edit."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.post(f"{running.url}/v1/edits", json={}, headers=headers, timeout=10).status_code


def test_a_slow_body_is_cut_off_with_408(tmp_path: Path) -> None:
    with stack(tmp_path, body_timeout_s=1.0) as running, trickling_edit(running) as sock:
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                sock.sendall(b" ")  # one byte at a time, never the whole body
            except OSError:
                break  # the receiver already closed the connection
            sock.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                answer += sock.recv(4096)
            assert time.monotonic() - started < 15, "the slow client was never cut off"
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert running.jobs() == []


def holds_the_slot(running: Stack, sock: socket.socket) -> bool:
    """True once a probe finds the one slot taken, by `sock`'s edit; False if that edit was itself
    refused (a probe held the slot at the moment it arrived)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if probe(running) == 503:
            return True
        if select.select([sock], [], [], 0.05)[0]:  # answered already: refused, not holding
            return False
    raise AssertionError("the trickling edit neither took the slot nor was refused")


def test_uploads_beyond_the_bound_are_503_with_retry_after(tmp_path: Path) -> None:
    with stack(tmp_path, max_uploads=1, body_timeout_s=20.0) as running:
        assert probe(running) == 422
        for _ in range(5):
            with trickling_edit(running) as sock:
                if holds_the_slot(running, sock):
                    refused = running.post_edit({})
                    assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
                    break
        else:
            raise AssertionError("the trickling edit never held the slot")
        wait_until(lambda: probe(running) == 422, 30, "the slot to be free again")
        assert running.jobs() == []


def test_queued_jobs_beyond_the_bound_are_429(tmp_path: Path) -> None:
    slow = dataclasses.replace(FAST_SIM, latency_s=60.0, webhook_drop_rate=1.0)
    with stack(tmp_path, slow, max_active=1, max_queued=2, reconcile_after_s=120.0) as running:
        first = running.submit()["id"]
        running.wait_state(first, "submitted")
        waiting = [running.submit()["id"], running.submit()["id"]]
        refused = running.post_edit({"prompt": "one too many", "image": IMAGE_B64})
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"].isdigit()
        assert {job["id"] for job in running.jobs()} == {first, *waiting}


class QuickHeaders(HeaderDeadlineProtocol):
    header_timeout_s = 1.0


def test_headers_sent_a_byte_at_a_time_are_cut_off(tmp_path: Path) -> None:
    with stack(tmp_path, http=QuickHeaders) as running:
        parts = urlsplit(running.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            started = time.monotonic()
            closed = False
            while not closed:
                assert time.monotonic() - started < 15, "the slow client was never cut off"
                try:
                    sock.sendall(b"a")
                except OSError:
                    break
                if select.select([sock], [], [], 0.3)[0]:
                    closed = sock.recv(4096) == b""
        # A well-behaved request on a new connection is served as usual.
        assert running.client.get("/healthz").status_code == 200


def test_a_client_gone_mid_body_is_a_disconnect_not_an_internal_error(tmp_path: Path) -> None:
    slow = dataclasses.replace(FAST_SIM, latency_s=60.0, webhook_drop_rate=1.0)
    with capture_logs() as logs, stack(tmp_path, slow, reconcile_after_s=120.0) as running:
        job_id = running.submit()["id"]
        running.wait_state(job_id, "submitted")
        webhook = (f"/webhooks/bfl/{job_id}", f"X-Webhook-Secret: {running.secret(job_id)}")
        for path, headers in (("/v1/edits", f"Authorization: Bearer {TOKEN}"), webhook):
            with trickling_edit(running, path=path, headers=headers):
                pass  # half a body, then the connection is closed

        def disconnects() -> list[MutableMapping[str, Any]]:
            return [entry for entry in logs if entry["event"] == "http.client_disconnected"]

        wait_until(lambda: len(disconnects()) == 2, 10, "both disconnects to be noted")
        assert {(entry["path"], entry["log_level"]) for entry in disconnects()} == {
            ("/v1/edits", "info"),
            (f"/webhooks/bfl/{job_id}", "info"),
        }
        assert running.job(job_id)["state"] == "submitted"
        assert [job["id"] for job in running.jobs()] == [job_id]
    assert [entry["event"] for entry in logs if entry["log_level"] in {"error", "critical"}] == []
