"""The backpressure transport against real servers: plain and TLS, errors, and bounded memory."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from receiver.http_transport import BackpressureTransport
from tests.servers import free_port, serve, wait_until

BODY_MIB = 16


async def big(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        chunk = b"x" * (1024 * 1024)
        for _ in range(BODY_MIB):
            yield chunk

    return StreamingResponse(chunks(), headers={"content-length": str(BODY_MIB * 1024 * 1024)})


async def slow(request: Request) -> Response:
    await anyio.sleep(5)
    return Response(b"late")


APP = Starlette(
    routes=[
        Route("/hello", lambda request: Response(b"hello")),
        Route("/big", big),
        Route("/slow", slow),
    ]
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve(APP) as url:
        yield url


def client(**options: object) -> httpx.AsyncClient:
    transport = BackpressureTransport(httpx.Limits(max_connections=10), **options)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, read=1.0))


@pytest.mark.anyio
async def test_requests_and_connection_reuse(server: str) -> None:
    async with client() as http:
        answers = [await http.get(f"{server}/hello") for _ in range(3)]
    assert [(a.status_code, a.content) for a in answers] == [(200, b"hello")] * 3


@pytest.mark.anyio
async def test_errors_are_httpx_errors(server: str) -> None:
    async with client() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{server}/slow")
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{free_port()}/hello")


@pytest.mark.anyio
async def test_a_large_body_streams_whole(server: str) -> None:
    """(What the transport is for, bounded memory under many concurrent downloads, is benchmark 7.)"""
    async with client() as http, http.stream("GET", f"{server}/big") as response:
        received = sum([len(chunk) async for chunk in response.aiter_raw()])
    assert received == BODY_MIB * 1024 * 1024


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()
    config = uvicorn.Config(APP, host="127.0.0.1", port=port, ssl_certfile=str(cert), ssl_keyfile=str(key))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the TLS server")
    yield f"https://127.0.0.1:{port}", cert
    server.should_exit = True
    thread.join(10)


@pytest.mark.anyio
async def test_tls(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    async with client(verify=ssl.create_default_context(cafile=str(cert))) as http:
        answer = await http.get(f"{url}/hello")
    assert (answer.status_code, answer.content) == (200, b"hello")
    async with client() as untrusting:
        with pytest.raises(httpx.ConnectError):  # the system's CAs do not know this certificate
            await untrusting.get(f"{url}/hello")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_downloads_connect_only_to_addresses_the_allowlist_admits(server: str) -> None:
    """The name is resolved once and its addresses checked where the connection is made: `localhost`
    (loopback) is refused unless named exactly, and nothing is sent to a refused address."""
    from receiver.downloads import FetchPolicy, download_client
    from receiver.errors import SampleRejected

    port = server.rsplit(":", 1)[1]
    limits, timeout = httpx.Limits(), httpx.Timeout(5.0)

    def policy(*hosts: str) -> FetchPolicy:
        return FetchPolicy(allowed_hosts=hosts, max_bytes=10**6, max_pixels=10**6)

    async with download_client(policy("*.example.com"), timeout, limits, None) as refusing:
        with pytest.raises(SampleRejected, match="resolves to internal address"):
            await refusing.get(f"http://localhost:{port}/hello")
    async with download_client(policy("localhost"), timeout, limits, None) as named:
        assert (await named.get(f"http://localhost:{port}/hello")).content == b"hello"
