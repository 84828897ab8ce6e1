"""In-memory image storage for tests."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Collection

from receiver.blobs.base import StoredBlob
from receiver.errors import NotFound
from receiver.resource import ResourceBase


class MemoryBlobStore(ResourceBase):
    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}

    async def put(self, key: str, chunks: AsyncIterable[bytes], content_type: str) -> StoredBlob:
        data = b"".join([chunk async for chunk in chunks])
        self.blobs[key] = (data, content_type)
        return StoredBlob(f"memory://{key}", hashlib.sha256(data).hexdigest(), len(data))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if key not in self.blobs:
            raise NotFound(f"no blob {key!r}")
        yield self.blobs[key][0][start:end]

    async def delete(self, keys: Collection[str]) -> None:
        for key in keys:
            self.blobs.pop(key, None)
