"""Events POSTed to an HTTP endpoint as structured-mode CloudEvents (`application/cloudevents+json`),
signed per Standard Webhooks with RECEIVER_HTTP_SINK_SECRET (see `signing`).

A 2xx answer is a delivery. 408, 425, 429 and 5xx (and network failures) are retried, honouring
`Retry-After`; any other answer dead-letters the event, since sending it again would not change it.
Credentials in the URL (`https://user:password@host/path`) are sent as Basic auth and never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

import anyio
import httpx
import structlog

from receiver.errors import ConfigError, SinkError
from receiver.models import Event
from receiver.registry import redact
from receiver.retry import parse_retry_after
from receiver.sinks.base import SinkBase, SinkOptions, event_json
from receiver.sinks.signing import parse_secret, signed_headers

log = structlog.get_logger("receiver.sinks.http")

_RETRYABLE = frozenset({408, 425, 429})


class HttpSink(SinkBase):
    def __init__(
        self, url: str, options: SinkOptions | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        options = options or SinkOptions()
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(f"not an http(s) sink URL: {redact(url)!r}")
        self.name = redact(url)
        self._auth = (parts.username or "", parts.password or "") if parts.username else None
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        self._url = parts._replace(netloc=netloc).geturl()
        self._address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._key = parse_secret(options.http_secret) if options.http_secret else None
        self._timeout = options.timeout_s
        self._clock = clock
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_url(cls, url: str, options: SinkOptions | None = None) -> HttpSink:
        return cls(url, options)

    async def open(self) -> None:
        if self._key is None:
            log.warning("http_sink.unsigned", sink=self.name, fix="set RECEIVER_HTTP_SINK_SECRET=whsec_...")
        self._client = httpx.AsyncClient(timeout=self._timeout, auth=self._auth, follow_redirects=False)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> None:
        """A TCP connection to the endpoint: no request, so the consumer sees no probe traffic."""
        with anyio.fail_after(self._timeout):
            stream = await anyio.connect_tcp(*self._address)
        await stream.aclose()

    async def publish(self, event: Event) -> None:
        if self._client is None:
            raise RuntimeError("sink is not open; use `async with`")
        body = event_json(event)
        headers = {"content-type": "application/cloudevents+json; charset=utf-8"}
        if self._key is not None:
            headers |= signed_headers(self._key, event.id, int(self._clock()), body)
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
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
