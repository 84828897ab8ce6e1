"""Which hosts result images (RECEIVER_SAMPLE_HOSTS) and input images (RECEIVER_INPUT_HOSTS) may be
downloaded from; pure.

Patterns are exact host names or addresses (`delivery-eu1.bfl.ai`, `127.0.0.1`, `[::1]`) or wildcards
(`*.bfl.ai`; for input images also a bare `*`, every host), each optionally with `:port`, which then
admits that port only. A private, loopback or link-local address (also one embedded in IPv6:
IPv4-mapped, NAT64, 6to4) is allowed only when named exactly, so a wildcard can never be turned into a
request to the receiver's own network.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from receiver.errors import ConfigError, HostRefused

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215, local-use translation
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class HostPattern:
    host: str  # lower case; `*.domain` for a wildcard, `*` for every host; IPv6 without brackets
    port: int | None = None

    @property
    def wildcard(self) -> bool:
        return self.host.startswith("*")

    def admits_port(self, port: int) -> bool:
        return self.port is None or self.port == port

    def names(self, host: str) -> bool:
        return not self.wildcard and host == self.host

    def covers(self, host: str) -> bool:
        return self.wildcard and host.endswith(self.host[1:])


def parse_pattern(entry: str, *, any_host: bool = False) -> HostPattern:
    """One host pattern, or `ValueError` saying why it is not one; a bare `*` only with `any_host`."""
    text = entry.strip().lower()
    if not text or any(mark in text for mark in ("://", "/", "?", "#", "@", " ")):
        raise ValueError("not a host pattern (give a host name, *.domain or an address, optionally :port)")
    host, port = _split_port(text)
    if host == "*":
        if not any_host:
            raise ValueError("a bare * is not allowed here: name the hosts, or *.domain")
    elif host.startswith("*."):
        _check_name(host[2:])
    elif not _is_address(host):
        _check_name(host)
    return HostPattern(host, port)


SAMPLE_HOSTS = "RECEIVER_SAMPLE_HOSTS"
INPUT_HOSTS = "RECEIVER_INPUT_HOSTS"
_ANY_HOST = frozenset({INPUT_HOSTS})  # the settings in which a bare `*` is every (public) host


@functools.cache
def parse_patterns(entries: tuple[str, ...], variable: str = SAMPLE_HOSTS) -> tuple[HostPattern, ...]:
    patterns = []
    for entry in entries:
        try:
            patterns.append(parse_pattern(entry, any_host=variable in _ANY_HOST))
        except ValueError as exc:
            raise ConfigError(f"{variable}: {entry!r} is invalid: {exc}") from None
    return tuple(patterns)


def check_url(
    url: str, patterns: Sequence[str], variable: str = SAMPLE_HOSTS, what: str = "sample"
) -> tuple[str, int]:
    """(host, port) of a URL the patterns of setting `variable` allow downloading `what` from, or
    `HostRefused` saying why not."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:  # a bad port or bracket
        raise HostRefused(f"{what} URL is malformed: {exc}") from None
    if parts.scheme not in {"https", "http"} or not host:
        raise HostRefused(f"{what} URL is not an http(s) URL: {parts.scheme}://")
    allowed = [p for p in parse_patterns(tuple(patterns), variable) if p.admits_port(port)]
    exact = any(p.names(host) for p in allowed)
    if not exact and not (any(p.covers(host) for p in allowed) and not is_internal(host)):
        raise HostRefused(f"{what} host {host} port {port} is not in {variable}")
    if parts.scheme == "http" and not exact:
        raise HostRefused(f"plain http is allowed only from hosts named exactly in {variable}, not {host}")
    return host, port


def check_resolved(
    host: str,
    addresses: Iterable[str],
    patterns: Sequence[str],
    variable: str = SAMPLE_HOSTS,
    what: str = "sample",
) -> None:
    """Refuse a wildcard-matched name that resolves to an internal address."""
    if named_exactly(host, patterns, variable):
        return
    for address in addresses:
        if is_internal(address):
            raise HostRefused(f"{what} host {host} resolves to internal address {address}")


def named_exactly(host: str, patterns: Sequence[str], variable: str = SAMPLE_HOSTS) -> bool:
    return any(p.names(host.lower()) for p in parse_patterns(tuple(patterns), variable))


def is_internal(host: str) -> bool:
    """True for IP literals that are not globally routable, also inside IPv6 (and for `localhost`)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if not address.is_global:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:
            return True
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        return embedded is not None and not embedded.is_global
    return False


def is_loopback(host: str) -> bool:
    """`localhost`, or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_ip_literal(host: str) -> bool:
    return _is_address(host.strip("[]"))


def _split_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not _is_address(host) or ":" not in host:
            raise ValueError("brackets must hold an IPv6 address")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError("only :port may follow an IPv6 address")
        return host, _port(rest[1:])
    if text.count(":") > 1:  # a bare IPv6 address
        if not _is_address(text):
            raise ValueError("not an IPv6 address (write [address]:port to name a port)")
        return text, None
    host, colon, port = text.partition(":")
    return host, _port(port) if colon else None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _check_name(name: str) -> None:
    if not name or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{name!r} is not a host name")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
