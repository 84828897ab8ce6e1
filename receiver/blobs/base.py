"""The image storage interface."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Collection
from dataclasses import dataclass
from typing import Protocol

from receiver.resource import Resource

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


@dataclass(frozen=True)
class StoredBlob:
    """Where a blob went, and the sha256 and size of exactly the bytes stored."""

    url: str
    sha256: str
    size: int


def image_key(job_id: str, content_type: str) -> str:
    """Where a job's image lives: one fixed key per job, so a retried download overwrites in place."""
    return f"{job_id}.{EXTENSIONS.get(content_type, 'bin')}"


def input_key(job_id: str, index: int, content_type: str) -> str:
    """Where a job's input image number `index` (from 0) lives, beside its result."""
    return f"{job_id}.input-{index}.{EXTENSIONS.get(content_type, 'bin')}"


class BlobStore(Resource, Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes], content_type: str) -> StoredBlob:
        """Store the stream under `key` atomically. If `chunks` raises, nothing is stored and an earlier
        blob under `key` is left as it was. The digest is taken as the bytes are written (off the event
        loop where the backend writes in a thread)."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The blob's bytes from `start` up to `end` (exclusive; None: to the end) in chunks;
        `receiver.errors.NotFound` if there is none. The range must lie within the blob."""
        ...

    async def delete(self, keys: Collection[str]) -> None:
        """Remove the blobs under `keys`; a key with no blob is skipped."""
