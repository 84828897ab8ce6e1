"""An httpx transport whose connections push back on a fast sender.

httpx reaches the network through httpcore, and on asyncio httpcore goes through anyio, whose stream
protocol queues whatever the socket delivers and never pauses reading. A result that arrives faster than
it is hashed and written therefore piles up in memory: about 6 MB per 20 MiB download here. asyncio's
own streams pause the socket once their buffer holds `READ_LIMIT * 2` bytes, so the rest waits in the
kernel until it is read. This module is that backend for httpcore, and a transport that uses it.
"""

# ruff: noqa: ASYNC109 - the `timeout` parameters are httpcore's interface

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import httpcore
import httpx

READ_LIMIT = 64 * 1024

# Called with a host name, the port and the addresses the name resolved to; raises to refuse.
AddressCheck = Callable[[str, int, list[str]], None]

# Resolves (host, port) as `loop.getaddrinfo` does.
Resolve = Callable[[str, int], Awaitable[list[tuple[Any, ...]]]]

_Socket_Option = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


@contextlib.contextmanager
def _mapped(timeout: type[Exception], failure: type[Exception]) -> Iterator[None]:
    """Raise httpcore's exceptions, which httpx maps to its own, for timeouts and socket errors."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out") from exc
    except (OSError, EOFError) as exc:
        raise failure(str(exc) or type(exc).__name__) from exc


async def _getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    return await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            self._writer.write(buffer)
            await asyncio.wait_for(self._writer.drain(), timeout)

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:
                await asyncio.wait_for(
                    self._writer.start_tls(ssl_context, server_hostname=server_hostname), timeout
                )
            except (OSError, TimeoutError):
                await self.aclose()
                raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked before an idle connection is reused: one the server has closed is not reused.
            # (httpcore's own check is a select() call per request.)
            return self._reader.at_eof() or self._writer.is_closing()
        name = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        return self._writer.get_extra_info(name)


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """With `check_addresses`, a host name is resolved once, the addresses are checked (the check
    raises to refuse), and the connection goes to the address that was checked: no second lookup that
    could answer differently (DNS rebinding). TLS still verifies the certificate for the host name."""

    def __init__(self, check_addresses: AddressCheck | None = None, resolve: Resolve | None = None) -> None:
        self._check = check_addresses
        self._resolve = resolve or _getaddrinfo

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_Socket_Option] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        targets = [host]  # without a check, asyncio resolves the name and tries each address itself
        if self._check is not None:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                found = await asyncio.wait_for(self._resolve(host, port), timeout)
            targets = list(dict.fromkeys(str(info[4][0]) for info in found))
            self._check(host, port, targets)
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            local = (local_address, 0) if local_address else None
            reader, writer = await asyncio.wait_for(self._open(targets, port, local), timeout)
        for option in socket_options or ():
            writer.get_extra_info("socket").setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def _open(
        self, targets: list[str], port: int, local: tuple[str, int] | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the first of `targets` that answers (every checked address is tried)."""
        failure: OSError | None = None
        for target in targets:
            try:
                return await asyncio.open_connection(target, port, limit=READ_LIMIT, local_addr=local)
            except OSError as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[_Socket_Option] | None = None
    ) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=READ_LIMIT), timeout
            )
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class BackpressureTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on `AsyncioBackend` (HTTP/1.1, no proxy: what the receiver talks to BFL with)."""

    def __init__(
        self,
        limits: httpx.Limits,
        verify: ssl.SSLContext | bool = True,
        check_addresses: AddressCheck | None = None,
        resolve: Resolve | None = None,
    ) -> None:
        super().__init__(limits=limits, verify=verify)
        # httpx builds its httpcore pool without a way to pass a network backend, so replace the pool.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(check_addresses, resolve),
        )
