"""Backends chosen by URL scheme from lazy import strings, so optional dependencies load only when used."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from receiver.errors import ConfigError, MissingDependency

T = TypeVar("T")


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme.lower()


class Registry(Generic[T]):
    """Backends of one kind by URL scheme, as lazy `"module:Class"` import strings.

    `extras` maps a scheme to the optional-dependency group that provides its client library.
    """

    def __init__(
        self, kind: str, backends: Mapping[str, str], extras: Mapping[str, str] | None = None
    ) -> None:
        self.kind = kind
        self.backends = dict(backends)
        self.extras = dict(extras or {})

    def from_url(self, url: str, *options: Any) -> T:
        """Import the backend registered for `url`'s scheme and build it with `from_url(url, *options)`."""
        scheme = scheme_of(url)
        target = self.backends.get(scheme)
        if target is None:
            known = ", ".join(f"{name}://" for name in sorted(self.backends))
            raise ConfigError(f"unknown {self.kind} URL scheme in {redact(url)!r}; expected one of: {known}")
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = self.extras.get(scheme, scheme)
            raise MissingDependency(
                f"the {scheme}:// {self.kind} needs an optional dependency ({exc.name}): "
                f"pip install 'kontext-receiver[{extra}]'"
            ) from exc
        backend: T = getattr(module, attribute).from_url(url, *options)
        return backend


def file_path(url: str, what: str) -> Path:
    """The path of `file://relative/path` or `file:///absolute/path`."""
    path = url.removeprefix("file://")
    if not path:
        raise ConfigError(f"{what} URL names no path: {url!r}")
    return Path(path)


def redact(url: str) -> str:
    """`url` without its credentials and query (where tokens go), safe for logs and sink names."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None and not parts.query:
        return url
    netloc = parts.hostname or ""
    with contextlib.suppress(ValueError):  # a port that is not a number is left out
        if parts.port is not None:
            netloc += f":{parts.port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"***@{netloc}"
    return parts._replace(netloc=netloc, query="***" if parts.query else "").geturl()
