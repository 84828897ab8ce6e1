"""Sink URLs parsed and checked once, at start-up: a malformed one stops the process with its name."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from receiver.errors import ConfigError
from receiver.registry import redact


@dataclass(frozen=True)
class SinkUrl:
    scheme: str
    host: str
    port: int
    path: str  # without the leading slash, percent-decoded
    params: dict[str, str]
    name: str  # shown in logs and delivery records: no credentials, only the known parameters
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def integer(self, param: str, default: int, minimum: int, maximum: int | None = None) -> int:
        raw = self.params.get(param)
        if raw is None:
            return default
        top = f" to {maximum}" if maximum is not None else " or more"
        if not raw.isdigit() or int(raw) < minimum or (maximum is not None and int(raw) > maximum):
            raise ConfigError(f"sink {self.name}: {param}={raw!r} must be a whole number from {minimum}{top}")
        return int(raw)


def parse_sink_url(
    url: str, default_ports: Mapping[str, int], known: Collection[str], required: Collection[str] = ()
) -> SinkUrl:
    """Split `url` (one of `default_ports`' schemes) and check its query names only `known` parameters,
    each once, with every `required` one present and not empty."""
    shown = redact(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in default_ports:
        raise ConfigError(f"sink {shown}: expected a {' or '.join(f'{s}://' for s in default_ports)} URL")
    try:
        port = parts.port or default_ports[scheme]
    except ValueError:
        raise ConfigError(f"sink {shown}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ConfigError(f"sink {shown}: the URL names no host")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in known:
            expected = ", ".join(sorted(known))
            raise ConfigError(f"sink {shown}: unknown query parameter {key!r} (expected: {expected})")
        if key in params:
            raise ConfigError(f"sink {shown}: query parameter {key!r} is given twice")
        params[key] = value
    missing = [key for key in required if not params.get(key)]
    if missing:
        raise ConfigError(f"sink {shown}: {', '.join(f'{key}=' for key in missing)} is required")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host + (f":{parts.port}" if parts.port else "")
    if parts.username is not None or parts.password is not None:
        netloc = f"***@{netloc}"
    query = urlencode(sorted(params.items()))
    name = parts._replace(netloc=netloc, query=query, fragment="").geturl()
    return SinkUrl(
        scheme=scheme,
        host=parts.hostname,
        port=port,
        path=unquote(parts.path.removeprefix("/")),
        params=params,
        name=name,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )
