"""Events POSTed to an HTTP endpoint as structured-mode CloudEvents (`application/cloudevents+json`).

A 2xx answer is a delivery. 408, 425, 429 and 5xx (and network failures) are retried, honouring
`Retry-After`; any other answer dead-letters the event, since sending it again would not change it.
Credentials in the URL (`https://user:password@host/path`) are sent as Basic auth and never logged.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx

from receiver.errors import ConfigError, SinkError
from receiver.models import Event
from receiver.registry import redact
from receiver.resource import ResourceBase
from receiver.retry import parse_retry_after
from receiver.sinks.base import event_line

_RETRYABLE = frozenset({408, 425, 429})


class HttpSink(ResourceBase):
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(f"not an http(s) sink URL: {redact(url)!r}")
        self.name = redact(url)
        self._auth = (parts.username or "", parts.password or "") if parts.username else None
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self._url = parts._replace(netloc=netloc).geturl()
        self._timeout = timeout_s
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_url(cls, url: str) -> HttpSink:
        return cls(url)

    async def open(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout, auth=self._auth, follow_redirects=False)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def publish(self, event: Event) -> None:
        if self._client is None:
            raise RuntimeError("sink is not open; use `async with`")
        try:
            response = await self._client.post(
                self._url,
                content=event_line(event),
                headers={"content-type": "application/cloudevents+json; charset=utf-8"},
            )
        except httpx.TransportError as exc:
            raise SinkError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if response.is_success:
            return
        status = response.status_code
        raise SinkError(
            f"{self.name} answered {status}",
            retryable=status in _RETRYABLE or status >= 500,
            retry_after=parse_retry_after(response.headers.get("retry-after"), time.time()),
        )
