"""Images in an S3-compatible object store (AWS S3, MinIO, Ceph, R2, ...), through obstore.

Credentials come from the S3 client's own chain: the standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`), else a web identity token (EKS), the
container credentials endpoint (ECS) or the instance profile. An upload goes out as one PUT when it
fits in a part, else as a multipart upload; one that fails or is cancelled is aborted, so a broken
download leaves neither an object nor an incomplete upload behind.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Collection
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

import anyio
import obstore
import structlog
from obstore.store import S3Store

from receiver.blobs.base import StoredBlob
from receiver.errors import ConfigError, NotFound, StorageUnavailable
from receiver.resource import ResourceBase

if TYPE_CHECKING:
    from obstore import AsyncWritableFile, GetOptions
    from obstore.store import S3Config

log = structlog.get_logger("receiver.blobs.s3")

# S3's smallest part but the last. An upload holds one part in memory while it is sent.
PART_BYTES = 5 * 1024 * 1024
# Uploads at once per process, whatever the download concurrency: 8 parts, 40 MiB of buffers at most.
MAX_UPLOADS = 8
_READ_CHUNK = 256 * 1024
_OPTIONS = frozenset({"endpoint", "region"})


class S3BlobStore(ResourceBase):
    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint: str | None = None, region: str | None = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self._store: S3Store | None = None
        self._uploads = anyio.CapacityLimiter(MAX_UPLOADS)

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        """`s3://bucket[/prefix][?endpoint=URL&region=R]`; a plain `http://` endpoint only when named."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.hostname or parts.username or parts.password or parts.port:
            raise ConfigError(
                f"RECEIVER_BLOB_URL must be s3://bucket[/prefix][?endpoint=URL&region=R]: {url!r}"
            )
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown s3:// option(s) {', '.join(unknown)} in {url!r}; known: endpoint, region"
            )
        endpoint = options.get("endpoint") or None
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"s3:// endpoint must be an http(s) URL, got {endpoint!r}")
        return cls(parts.netloc, parts.path, endpoint=endpoint, region=options.get("region") or None)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    async def open(self) -> None:
        config: S3Config = {}
        if self.endpoint is not None:
            config["endpoint"] = self.endpoint
        if self.region is not None:
            config["region"] = self.region
        allow_http = self.endpoint is not None and self.endpoint.startswith("http://")
        try:
            store = S3Store(
                self.bucket,
                prefix=self.prefix or None,
                config=config,
                client_options={"allow_http": allow_http},
            )
        except Exception as exc:  # obstore reports configuration problems with its own exceptions
            raise ConfigError(f"cannot use {self.location}: {_first_line(exc)}") from exc
        self._store = store
        await self._check_writable()

    async def _check_writable(self) -> None:
        """Fail start-up, not the first download, when the bucket is missing, unreachable or read-only."""
        probe = f".kontext-receiver-probe-{uuid.uuid4().hex}"
        where = f"{self.location} (endpoint {self.endpoint or 'AWS'})"
        try:
            with anyio.fail_after(30):
                await obstore.put_async(self.store, probe, b"probe", use_multipart=False)
                await obstore.delete_async(self.store, probe)
        except Exception as exc:
            raise ConfigError(
                f"the blob store {where} is not writable: {type(exc).__name__}: {_first_line(exc)} "
                "(the bucket must exist; the credentials need PutObject and DeleteObject on the prefix)"
            ) from exc

    @property
    def store(self) -> S3Store:
        if self._store is None:
            raise RuntimeError("blob store is not open; use `async with blobs:`")
        return self._store

    def url_of(self, key: str) -> str:
        return f"{self.location}/{key}"

    async def put(self, key: str, chunks: AsyncIterable[bytes], content_type: str) -> StoredBlob:
        url = self.url_of(key)
        async with self._uploads:
            writer = obstore.open_writer_async(
                self.store,
                key,
                attributes={"Content-Type": content_type},
                buffer_size=PART_BYTES,
                max_concurrency=1,
            )
            digest = hashlib.sha256()
            size = 0
            try:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    await _storage(writer.write(chunk), f"upload to {url}")
                await _storage(writer.close(), f"upload to {url}")
            except BaseException as exc:
                await _abort(writer, exc, url)
                raise
        return StoredBlob(url, digest.hexdigest(), size)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        options: GetOptions = {}
        if end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            result = await obstore.get_async(self.store, key, options=options)
        except FileNotFoundError:
            raise NotFound(f"no blob {key!r}") from None
        except Exception as exc:
            raise StorageUnavailable(f"reading {self.url_of(key)} failed: {_first_line(exc)}") from exc
        async for chunk in result.stream(min_chunk_size=_READ_CHUNK):
            yield bytes(chunk)

    async def delete(self, keys: Collection[str]) -> None:
        if not keys:
            return
        try:
            await obstore.delete_async(self.store, list(keys))
        except Exception as exc:
            raise StorageUnavailable(f"deleting from {self.location} failed: {_first_line(exc)}") from exc


async def _storage(step: Awaitable[object], what: str) -> None:
    """Await a step of the object store client; its failure is the storage's, not the stream's."""
    try:
        await step
    except Exception as exc:
        raise StorageUnavailable(f"{what} failed: {_first_line(exc)}") from exc


async def _abort(writer: AsyncWritableFile, exc: BaseException, url: str) -> None:
    """Leaving the writer with an exception aborts its multipart upload (or skips its single PUT)."""
    with anyio.CancelScope(shield=True):
        try:
            await writer.__aexit__(type(exc), exc, exc.__traceback__)
        except Exception as failure:  # the bucket's lifecycle rule must then remove the incomplete upload
            log.warning("blob.abort_failed", url=url, error=_first_line(failure))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
