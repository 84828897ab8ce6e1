"""The download policy: magic-byte sniffing and `fetch_sample` against a mock delivery host."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from receiver.blobs.memory import MemoryBlobStore
from receiver.downloads import FetchPolicy, sniff
from receiver.errors import DownloadError, SampleRejected
from receiver.models import ImageInfo
from receiver.worker.fetch import fetch_sample
from tests.images import encode_image

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:8765/results/task-1/sample.png?exp=1&sig=abc"
JOB_ID = "job-1"
POLICY = FetchPolicy(allowed_hosts=("*.bfl.ai", "127.0.0.1"), max_bytes=200_000, max_pixels=1_000_000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


PNG = encode_image("PNG")


class Body:
    """A streamed response body without Content-Length that records how much of it was read."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            self.sent += 1
            yield part


@dataclass
class Delivery:
    """BFL's delivery host, as an httpx mock transport; downloads land in a memory blob store."""

    respond: Callable[[httpx.Request], httpx.Response]
    blobs: MemoryBlobStore = field(default_factory=MemoryBlobStore)
    seen: list[httpx.Request] = field(default_factory=list)
    answered: list[httpx.Response] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        self.answered.append(self.respond(request))
        return self.answered[-1]

    async def fetch(self, url: str = URL, policy: FetchPolicy = POLICY) -> ImageInfo:
        async with httpx.AsyncClient(transport=httpx.MockTransport(self.handle)) as http:
            return await fetch_sample(http, url, JOB_ID, self.blobs, policy)

    async def refused(self, url: str = URL, policy: FetchPolicy = POLICY) -> DownloadError:
        with pytest.raises(DownloadError) as info:
            await self.fetch(url, policy)
        return info.value


def serve(data: bytes, status: int = 200, chunk: int | None = None) -> Delivery:
    body: bytes | Body = data if chunk is None else Body(data, chunk)
    return Delivery(lambda request: httpx.Response(status, content=body))


# --- sniff ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_sniff_recognises_images(fmt: str, content_type: str) -> None:
    assert sniff(encode_image(fmt)[:16]) == content_type


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"GIF89a\x01\x00\x01\x00",
        b"<html><body>",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"\x89PNG",
        b"\xff\xd8",
    ],
    ids=["empty", "gif", "html", "riff-wave", "short-png", "short-jpeg"],
)
def test_sniff_refuses_everything_else(head: bytes) -> None:
    assert sniff(head) is None


# --- fetch_sample ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type", "key"),
    [
        ("JPEG", "image/jpeg", "job-1.jpg"),
        ("PNG", "image/png", "job-1.png"),
        ("WEBP", "image/webp", "job-1.webp"),
    ],
)
@pytest.mark.parametrize("chunk", [None, 5], ids=["whole", "5-byte-chunks"])
async def test_fetch_stores_the_image_and_describes_it(
    fmt: str, content_type: str, key: str, chunk: int | None
) -> None:
    data = encode_image(fmt, size=(64, 48))
    delivery = serve(data, chunk=chunk)
    info = await delivery.fetch()
    assert info == ImageInfo(
        url=f"memory://{key}",
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        content_type=content_type,
        width=64,
        height=48,
    )
    assert delivery.blobs.blobs == {key: (data, content_type)}
    assert [str(r.url) for r in delivery.seen] == [URL]


@pytest.mark.parametrize("status", [401, 403, 404, 410])
async def test_refused_url_counts_as_expired(status: int) -> None:
    error = await serve(b"AuthenticationFailed", status).refused()
    assert (type(error), error.url_expired, error.retryable) == (DownloadError, True, False)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
async def test_transient_status_is_retryable(status: int) -> None:
    delivery = serve(b"busy", status)
    error = await delivery.refused()
    assert (error.url_expired, error.retryable) == (False, True)
    assert delivery.blobs.blobs == {}


@pytest.mark.parametrize("status", [204, 302, 400])
async def test_other_status_is_a_plain_failure(status: int) -> None:
    error = await serve(b"", status).refused()
    assert (error.url_expired, error.retryable) == (False, False)


async def test_content_length_over_the_cap_is_refused_unread() -> None:
    body = Body(PNG, 1024)
    delivery = Delivery(
        lambda request: httpx.Response(
            200, headers={"content-length": str(POLICY.max_bytes + 1)}, content=body
        )
    )
    error = await delivery.refused()
    assert isinstance(error, SampleRejected) and "cap" in str(error)
    assert body.sent == 0
    assert delivery.blobs.blobs == {}


async def test_streamed_body_over_the_cap_is_refused_while_streaming() -> None:
    oversized = PNG + b"\0" * (POLICY.max_bytes * 3)  # a readable header, then far too many bytes
    body = Body(oversized, 10_000)
    delivery = Delivery(lambda request: httpx.Response(200, content=body))
    error = await delivery.refused()
    assert isinstance(error, SampleRejected) and "cap" in str(error)
    assert "content-length" not in delivery.answered[0].headers
    assert body.sent <= POLICY.max_bytes // 10_000 + 2  # stopped at the cap, not at the end
    assert delivery.blobs.blobs == {}


@pytest.mark.parametrize(
    "data",
    [b"<html>Access denied</html>" * 10, b"GIF89a" + b"\0" * 200, b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50],
    ids=["html", "gif", "png-magic-without-header"],
)
async def test_non_image_is_rejected_and_not_stored(data: bytes) -> None:
    delivery = serve(data)
    assert isinstance(await delivery.refused(), SampleRejected)
    assert delivery.blobs.blobs == {}


async def test_image_over_the_pixel_cap_is_rejected() -> None:
    delivery = serve(encode_image("PNG", size=(1001, 1000)))
    error = await delivery.refused()
    assert isinstance(error, SampleRejected) and "1001x1000" in str(error)
    assert delivery.blobs.blobs == {}


async def test_earlier_image_survives_a_rejected_retry() -> None:
    delivery = serve(PNG)
    await delivery.fetch()
    delivery.respond = lambda request: httpx.Response(200, content=Body(PNG + b"\0" * POLICY.max_bytes, 4096))
    assert isinstance(await delivery.refused(), SampleRejected)
    assert delivery.blobs.blobs == {"job-1.png": (PNG, "image/png")}


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/s.png",
        "https://bfl.ai.evil.example/s.png",
        "http://delivery-eu1.bfl.ai/s.png",
        "http://10.0.0.1/s.png",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
async def test_host_not_allowed_is_rejected_before_any_request(url: str) -> None:
    delivery = serve(PNG)
    assert isinstance(await delivery.refused(url), SampleRejected)
    assert delivery.seen == []
    assert delivery.blobs.blobs == {}


async def test_connection_failure_is_retryable() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    error = await Delivery(unreachable).refused()
    assert (type(error), error.retryable, error.url_expired) == (DownloadError, True, False)


async def test_body_cut_short_is_retryable_and_stores_nothing() -> None:
    async def cut_short() -> AsyncIterator[bytes]:
        yield PNG[:100]
        raise httpx.ReadError("connection reset")

    delivery = Delivery(lambda request: httpx.Response(200, content=cut_short()))
    error = await delivery.refused()
    assert (type(error), error.retryable) == (DownloadError, True)
    assert delivery.blobs.blobs == {}
