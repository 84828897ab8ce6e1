"""Result downloads against real servers on loopback: `host:port` patterns, redirects checked hop by
hop, every checked address tried. The host that must never be asked is a trap on 127.0.0.2, which
counts every request it gets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from receiver.blobs.memory import MemoryBlobStore
from receiver.downloads import FetchPolicy, download_client
from receiver.errors import SampleRejected
from receiver.http_transport import BackpressureTransport
from receiver.worker.fetch import fetch_sample
from tests.images import encode_image
from tests.servers import serve

PNG = encode_image("PNG", (20, 10))
LIMITS = httpx.Limits(max_connections=4)
TIMEOUT = httpx.Timeout(5.0)


@dataclass
class Host:
    url: str
    requests: list[str] = field(default_factory=list)


def image_host(redirects: dict[str, str] | None = None) -> Starlette:
    """Serves PNG at /x.png, and a redirect from each path in `redirects` to its target."""

    async def handle(request: Request) -> Response:
        request.app.state.requests.append(request.url.path)
        target = (redirects or {}).get(request.url.path)
        if target is not None:
            return RedirectResponse(target, status_code=302)
        return Response(PNG, media_type="image/png")

    app = Starlette(routes=[Route("/{path:path}", handle)])
    app.state.requests = []
    return app


@pytest.fixture
def trap() -> Iterator[Host]:
    app = image_host()
    with serve(app, host="127.0.0.2") as url:
        yield Host(url, app.state.requests)


def fetch(url: str, allowed: tuple[str, ...]) -> Any:
    policy = FetchPolicy(allowed_hosts=allowed, max_bytes=1 << 20, max_pixels=10**6)

    async def run() -> Any:
        async with download_client(policy, TIMEOUT, LIMITS, None) as http:
            return await fetch_sample(http, url, "job-1", MemoryBlobStore(), policy)

    return anyio.run(run)


def test_a_host_port_pattern_admits_that_port_only(trap: Host) -> None:
    with serve(image_host()) as url:
        port = url.rsplit(":", 1)[1]
        assert fetch(f"{url}/x.png", (f"127.0.0.1:{port}",)).bytes == len(PNG)
        with pytest.raises(SampleRejected, match="port"):
            fetch(f"{trap.url}/x.png", (f"127.0.0.2:{int(port) + 1}",))
    assert trap.requests == []


def test_a_redirect_inside_the_allowlist_is_followed() -> None:
    with serve(image_host({"/x.png": "/moved.png"})) as first, serve(image_host()) as second:
        app_redirects = image_host({"/start": f"{second}/final.png"})
        with serve(app_redirects) as start:
            image = fetch(f"{start}/start", ("127.0.0.1",))
        assert image.bytes == len(PNG) and image.width == 20
        assert fetch(f"{first}/x.png", ("127.0.0.1",)).bytes == len(PNG)


def test_a_redirect_leaving_the_allowlist_is_refused_without_asking_the_other_host(trap: Host) -> None:
    with (
        serve(image_host({"/x.png": f"{trap.url}/x.png"})) as url,
        pytest.raises(SampleRejected, match=r"127\.0\.0\.2"),
    ):
        fetch(f"{url}/x.png", ("127.0.0.1",))
    assert trap.requests == []


def test_at_most_three_redirects_are_followed() -> None:
    hops = {"/0": "/1", "/1": "/2", "/2": "/3", "/3": "/4"}
    with serve(image_host(hops | {"/4": "/x.png"})) as url:
        with pytest.raises(SampleRejected, match="more than 3"):
            fetch(f"{url}/0", ("127.0.0.1",))
        assert fetch(f"{url}/2", ("127.0.0.1",)).bytes == len(PNG)  # three hops: fine


def test_every_checked_address_of_a_name_is_tried() -> None:
    """`images.test` resolves to 127.0.0.3 (nothing listens) and then 127.0.0.1: the download goes
    to the second, and only to addresses the check saw."""
    checked: list[list[str]] = []

    async def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        return [(2, 1, 6, "", ("127.0.0.3", port)), (2, 1, 6, "", ("127.0.0.1", port))]

    with serve(image_host()) as url:
        port = int(url.rsplit(":", 1)[1])

        async def run() -> httpx.Response:
            transport = BackpressureTransport(
                LIMITS,
                check_addresses=lambda host, port, addresses: checked.append(addresses),
                resolve=resolve,
            )
            async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as http:
                return await http.get(f"http://images.test:{port}/x.png")

        response = anyio.run(run)
    assert response.status_code == 200 and response.content == PNG
    assert checked == [["127.0.0.3", "127.0.0.1"]]
