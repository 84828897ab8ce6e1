"""A Server-Sent Events client for tests: reads a stream in a thread, so a test waits on what arrived."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from receiver import sse
from receiver.stores.feed import JOB_STATE
from tests.integration.stack import TOKEN
from tests.servers import wait_until


class Listener:
    """Collects the raw lines of one `GET /v1/events`; stops at the next line after `close()` (streams
    under test send heartbeats often, so that is soon)."""

    def __init__(self, url: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None):
        self.lines: list[str] = []
        self.status: int | None = None
        self.response_headers: httpx.Headers | None = None
        self._closed = threading.Event()
        self._done = threading.Event()
        sent = {"Authorization": f"Bearer {TOKEN}"} | (headers or {})
        self._thread = threading.Thread(target=self._read, args=(url, params or {}, sent), daemon=True)
        self._thread.start()
        wait_until(lambda: self.status is not None or self._done.is_set(), 10, "the stream to answer")

    def _read(self, url: str, params: dict[str, str], headers: dict[str, str]) -> None:
        try:
            with httpx.stream("GET", f"{url}/v1/events", params=params, headers=headers, timeout=30) as r:
                self.response_headers = r.headers
                self.status = r.status_code
                for line in r.iter_lines():
                    self.lines.append(line)
                    if self._closed.is_set():
                        return
        except httpx.TransportError:
            return
        finally:
            self._done.set()

    def close(self) -> None:
        self._closed.set()
        wait_until(self._done.is_set, 10, "the stream to close")

    @property
    def messages(self) -> list[sse.Message]:
        return list(sse.parse(list(self.lines)))

    def states(self, job_id: str) -> list[str]:
        return [
            json.loads(m.data)["state"]
            for m in self.messages
            if m.event == JOB_STATE and json.loads(m.data)["job_id"] == job_id
        ]

    def wait_state(self, job_id: str, state: str, timeout: float = 15.0) -> None:
        wait_until(lambda: state in self.states(job_id), timeout, f"{state} for {job_id} on the stream")

    def data(self) -> list[dict[str, Any]]:
        return [json.loads(m.data) for m in self.messages]


@contextmanager
def listening(url: str, **kwargs: Any) -> Iterator[Listener]:
    listener = Listener(url, **kwargs)
    try:
        yield listener
    finally:
        listener.close()
