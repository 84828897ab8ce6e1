"""Which hosts result images may be downloaded from; pure.

Patterns are exact host names (`delivery-eu1.bfl.ai`, `127.0.0.1`) or wildcards (`*.bfl.ai`). A
private, loopback or link-local address is allowed only when named exactly, so a wildcard can never
be turned into a request to the receiver's own network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from receiver.errors import SampleRejected


def check_sample_url(url: str, patterns: Sequence[str]) -> tuple[str, int]:
    """(host, port) of an allowed download URL, or `SampleRejected` saying why not."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in {"https", "http"} or not host:
        raise SampleRejected(f"sample URL is not an http(s) URL: {parts.scheme}://")
    exact = named_exactly(host, patterns)
    if parts.scheme == "http" and not exact:
        raise SampleRejected(
            f"plain http is allowed only from hosts named exactly in RECEIVER_SAMPLE_HOSTS, not {host}"
        )
    if not exact and not (matches_wildcard(host, patterns) and not is_internal(host)):
        raise SampleRejected(f"sample host {host} is not in RECEIVER_SAMPLE_HOSTS")
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def check_resolved(host: str, addresses: Iterable[str], patterns: Sequence[str]) -> None:
    """Refuse a wildcard-matched name that resolves to an internal address."""
    if named_exactly(host, patterns):
        return
    for address in addresses:
        if is_internal(address):
            raise SampleRejected(f"sample host {host} resolves to internal address {address}")


def named_exactly(host: str, patterns: Sequence[str]) -> bool:
    return any(host == pattern.lower().strip("[]") for pattern in patterns)


def matches_wildcard(host: str, patterns: Sequence[str]) -> bool:
    return any(p.startswith("*.") and host.endswith(p[1:].lower()) for p in patterns)


def is_internal(host: str) -> bool:
    """True for IP literals that are not globally routable (and for `localhost`)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_global


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
