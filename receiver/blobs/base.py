"""The image storage interface."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

from receiver.resource import Resource

EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def image_key(job_id: str, content_type: str) -> str:
    """Where a job's image lives: one fixed key per job, so a retried download overwrites in place."""
    return f"{job_id}.{EXTENSIONS.get(content_type, 'bin')}"


class BlobStore(Resource, Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes], content_type: str) -> str:
        """Store the stream under `key` atomically and return its URL. If `chunks` raises, nothing is
        stored and an earlier blob under `key` is left as it was."""

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The blob's bytes in chunks; `receiver.errors.NotFound` if there is none."""
        ...
