"""Bounded resources: upload slots (503), the queue of jobs waiting upstream (429), and a body read
timeout that cuts a client off however slowly it trickles in (408)."""

from __future__ import annotations

import contextlib
import dataclasses
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from receiver.web.protocol import HeaderDeadlineProtocol
from tests.integration.stack import FAST_SIM, IMAGE_B64, TOKEN, Stack, stack
from tests.servers import wait_until


@contextmanager
def trickling_edit(running: Stack, length: int = 1000) -> Iterator[socket.socket]:
    """An edit whose body is announced but (so far) not sent."""
    parts = urlsplit(running.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        f"POST /v1/edits HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"{")
    try:
        yield sock
    finally:
        sock.close()


def probe(running: Stack) -> int:
    """An edit refused as invalid when it gets a slot: it never creates a job."""
    return running.post_edit({}).status_code


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
