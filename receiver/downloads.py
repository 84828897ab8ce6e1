"""What result downloads may do, and the HTTP client that holds every connection to it."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from receiver.hosts import check_resolved, is_ip_literal
from receiver.http_transport import BackpressureTransport


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: tuple[str, ...]
    max_bytes: int
    max_pixels: int


def download_client(
    policy: FetchPolicy,
    timeout: httpx.Timeout,
    limits: httpx.Limits,
    transport: httpx.AsyncBaseTransport | None,
) -> httpx.AsyncClient:
    """The client for result downloads: each connection goes only to an address the allowlist admits."""

    def check(host: str, addresses: list[str]) -> None:
        if not is_ip_literal(host):  # an IP literal was checked with the URL
            check_resolved(host, addresses, policy.allowed_hosts)

    transport = transport or BackpressureTransport(limits, check_addresses=check)
    return httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)
