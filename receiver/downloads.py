"""What downloads may do, the HTTP client that holds every connection to it, and the download itself.

Result downloads (RECEIVER_SAMPLE_HOSTS) and input images given by URL (RECEIVER_INPUT_HOSTS) both go
this way: the host of every URL, redirects included, is checked before it is asked, every address a
name resolves to as the client connects, and the body is never held in memory: chunks are counted and
passed on to the blob store, and only the first bytes are kept to read the image header. Anything
wrong raises inside the stream, so the blob store discards what it had written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from receiver.bfl.validation import read_image_header
from receiver.blobs import BlobStore, StoredBlob
from receiver.errors import DownloadError, ImageRejected, SampleRejected
from receiver.hosts import SAMPLE_HOSTS, check_resolved, check_url, is_ip_literal
from receiver.http_transport import BackpressureTransport

MAX_REDIRECTS = 3
_HEAD_BYTES = 256 * 1024  # enough for the header of any JPEG/PNG/WebP short of absurd metadata
_MAGIC = {
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG\r\n\x1a\n": "image/png",
}


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: tuple[str, ...]
    max_bytes: int
    max_pixels: int
    setting: str = SAMPLE_HOSTS  # the variable `allowed_hosts` come from, named when a host is refused
    what: str = "sample"  # what is downloaded, as messages call it


@dataclass(frozen=True)
class CheckedImage:
    key: str
    blob: StoredBlob
    content_type: str
    width: int
    height: int


def download_client(
    policy: FetchPolicy,
    timeout: httpx.Timeout,
    limits: httpx.Limits,
    transport: httpx.AsyncBaseTransport | None,
) -> httpx.AsyncClient:
    """A client for downloads under `policy`: each connection goes only to an address it admits."""

    def check(host: str, addresses: list[str]) -> None:
        if not is_ip_literal(host):  # an IP literal was checked with the URL
            check_resolved(host, addresses, policy.allowed_hosts, policy.setting, policy.what)

    transport = transport or BackpressureTransport(limits, check_addresses=check)
    return httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)


@asynccontextmanager
async def open_download(
    http: httpx.AsyncClient, url: str, policy: FetchPolicy
) -> AsyncIterator[httpx.Response]:
    """The answer to GET `url` after at most `MAX_REDIRECTS` redirects, each to a host the policy
    allows, its body not read yet. Transport failures, also while the body is read, are a retryable
    `DownloadError`."""
    for _ in range(MAX_REDIRECTS + 1):
        # The host name is checked here; the addresses it resolves to are checked as the client
        # connects (see `download_client`).
        check_url(url, policy.allowed_hosts, policy.setting, policy.what)
        try:
            async with http.stream("GET", url) as response:
                location = response.headers.get("location") if response.is_redirect else None
                if location is None:
                    yield response
                    return
                url = _redirect_target(response.url, location, policy)
        except httpx.TransportError as exc:  # timeouts, resets, a body cut short
            raise DownloadError(f"download failed: {type(exc).__name__}: {exc}", retryable=True) from exc
    raise SampleRejected(f"{policy.what} URL redirects more than {MAX_REDIRECTS} times")


def _redirect_target(base: httpx.URL, location: str, policy: FetchPolicy) -> str:
    try:
        return str(base.join(location))
    except httpx.InvalidURL as exc:
        raise SampleRejected(f"{policy.what} URL redirects to an invalid URL: {exc}") from None


def check_length(response: httpx.Response, policy: FetchPolicy) -> None:
    """Refuse a body whose Content-Length is over the cap before reading it."""
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > policy.max_bytes:
        raise ImageRejected(f"{policy.what} is {length} bytes, over the {policy.max_bytes}-byte cap")


def sniff(head: bytes) -> str | None:
    """Content type from magic bytes, or None when the bytes are not a JPEG, PNG or WebP."""
    for magic, content_type in _MAGIC.items():
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


async def store_checked(
    response: httpx.Response, key_for: Callable[[str], str], blobs: BlobStore, policy: FetchPolicy
) -> CheckedImage:
    """Stream the body into the blob store under `key_for(content type)`, checked on the way: a JPEG,
    PNG or WebP by its magic bytes and its header, within the policy's bytes and pixels."""
    chunks = response.aiter_bytes()
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= 16:
            break
    content_type = sniff(head)
    if content_type is None:
        raise ImageRejected(f"{policy.what} is not a JPEG, PNG or WebP image")
    checked = _CheckedStream(head, chunks, content_type, policy)
    key = key_for(content_type)
    stored = await blobs.put(key, checked, content_type)
    return CheckedImage(key, stored, content_type, checked.width, checked.height)


class _CheckedStream:
    """The body, counted as it passes; raises before its end if the image is not acceptable."""

    def __init__(
        self, first: bytes, rest: AsyncIterator[bytes], content_type: str, policy: FetchPolicy
    ) -> None:
        self.first = first
        self.rest = rest
        self.content_type = content_type
        self.policy = policy
        self.size = 0
        self.head = bytearray()
        self.width = self.height = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._take(self.first)
        async for chunk in self.rest:
            yield self._take(chunk)
        self._check_header()

    def _take(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size > self.policy.max_bytes:
            raise ImageRejected(f"{self.policy.what} is over the {self.policy.max_bytes}-byte cap")
        if len(self.head) < _HEAD_BYTES:
            self.head += chunk[: _HEAD_BYTES - len(self.head)]
        return chunk

    def _check_header(self) -> None:
        header = read_image_header(bytes(self.head))
        if header is None or header[0] != self.content_type:
            raise ImageRejected(f"{self.policy.what} has no readable image header")
        _, self.width, self.height = header
        if self.width * self.height > self.policy.max_pixels:
            cap = self.policy.max_pixels
            raise ImageRejected(f"{self.policy.what} is {self.width}x{self.height}, over the {cap}-pixel cap")
