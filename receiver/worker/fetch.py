"""Download a result image straight into the blob store, checking it on the way through.

The body is never held in memory: chunks are hashed, counted and passed on to the blob store, and only
the first bytes are kept to read the image header. Anything wrong raises inside the stream, so the blob
store discards what it had written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from receiver.bfl.validation import read_image_header
from receiver.blobs import BlobStore, image_key
from receiver.downloads import FetchPolicy
from receiver.errors import DownloadError, SampleRejected
from receiver.hosts import check_sample_url
from receiver.models import ImageInfo

_HEAD_BYTES = 256 * 1024  # enough for the header of any JPEG/PNG/WebP short of absurd metadata
_MAGIC = {
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG\r\n\x1a\n": "image/png",
}
_EXPIRED = frozenset({401, 403, 404, 410})
MAX_REDIRECTS = 3
_RETRYABLE = frozenset({408, 425, 429})


def sniff(head: bytes) -> str | None:
    """Content type from magic bytes, or None when the bytes are not a JPEG, PNG or WebP."""
    for magic, content_type in _MAGIC.items():
        if head.startswith(magic):
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


async def fetch_sample(
    http: httpx.AsyncClient, url: str, job_id: str, blobs: BlobStore, policy: FetchPolicy
) -> ImageInfo:
    """Download `url`, following at most `MAX_REDIRECTS` redirects, each to an allowed host."""
    for _ in range(MAX_REDIRECTS + 1):
        # The host name is checked here; the addresses it resolves to are checked as the downloads
        # client connects (see `download_client`).
        check_sample_url(url, policy.allowed_hosts)
        try:
            async with http.stream("GET", url) as response:
                location = response.headers.get("location") if response.is_redirect else None
                if location is None:
                    _check_response(response, policy)
                    return await _store(response, job_id, blobs, policy)
                url = _redirect_target(response.url, location)
        except httpx.TransportError as exc:  # timeouts, resets, a body cut short
            raise DownloadError(f"download failed: {type(exc).__name__}: {exc}", retryable=True) from exc
    raise SampleRejected(f"sample URL redirects more than {MAX_REDIRECTS} times")


def _redirect_target(base: httpx.URL, location: str) -> str:
    try:
        return str(base.join(location))
    except httpx.InvalidURL as exc:
        raise SampleRejected(f"sample URL redirects to an invalid URL: {exc}") from None


def _check_response(response: httpx.Response, policy: FetchPolicy) -> None:
    status = response.status_code
    if status in _EXPIRED:
        raise DownloadError(f"sample URL refused with {status} (expired?)", retryable=False, url_expired=True)
    if status in _RETRYABLE or status >= 500:
        raise DownloadError(f"sample download answered {status}", retryable=True)
    if status != 200:
        raise DownloadError(f"sample download answered {status}", retryable=False)
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > policy.max_bytes:
        raise SampleRejected(f"sample is {length} bytes, over the {policy.max_bytes}-byte cap")


async def _store(response: httpx.Response, job_id: str, blobs: BlobStore, policy: FetchPolicy) -> ImageInfo:
    chunks = response.aiter_bytes()
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= 16:
            break
    content_type = sniff(head)
    if content_type is None:
        raise SampleRejected("sample is not a JPEG, PNG or WebP image")
    checked = _CheckedStream(head, chunks, content_type, policy)
    stored = await blobs.put(image_key(job_id, content_type), checked, content_type)
    return ImageInfo(
        url=stored.url,
        sha256=stored.sha256,
        bytes=stored.size,
        content_type=content_type,
        width=checked.width,
        height=checked.height,
    )


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
            raise SampleRejected(f"sample is over the {self.policy.max_bytes}-byte cap")
        if len(self.head) < _HEAD_BYTES:
            self.head += chunk[: _HEAD_BYTES - len(self.head)]
        return chunk

    def _check_header(self) -> None:
        header = read_image_header(bytes(self.head))
        if header is None or header[0] != self.content_type:
            raise SampleRejected("sample has no readable image header")
        _, self.width, self.height = header
        if self.width * self.height > self.policy.max_pixels:
            raise SampleRejected(
                f"sample is {self.width}x{self.height}, over the {self.policy.max_pixels}-pixel cap"
            )
