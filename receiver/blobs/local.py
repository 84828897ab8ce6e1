"""Images in a local folder: each written to a temporary file, flushed, then renamed into place."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread

from receiver.errors import NotFound
from receiver.registry import file_path
from receiver.resource import ResourceBase

_READ_CHUNK = 256 * 1024


class LocalBlobStore(ResourceBase):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @classmethod
    def from_url(cls, url: str) -> LocalBlobStore:
        """`file://relative/dir` or `file:///absolute/dir`."""
        return cls(file_path(url, "blob store"))

    async def open(self) -> None:
        await anyio.to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))

    def path_of(self, key: str) -> Path:
        """The file of `key`, which must be a plain file name: nothing can point outside the folder."""
        if not key or key.startswith(".") or "/" in key or "\\" in key or "\0" in key:
            raise NotFound(f"no blob {key!r}")
        return self.root / key

    async def put(self, key: str, chunks: AsyncIterable[bytes], content_type: str) -> str:
        final = self.path_of(key)
        temp = self.root / f".{key}.{uuid.uuid4().hex}.part"
        try:
            async with await anyio.open_file(temp, "wb") as out:
                async for chunk in chunks:
                    await out.write(chunk)
                await out.flush()
                await anyio.to_thread.run_sync(os.fsync, out.wrapped.fileno())
            await anyio.to_thread.run_sync(os.replace, temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return final.as_uri()

    async def read(self, key: str) -> AsyncIterator[bytes]:
        try:
            source = await anyio.open_file(self.path_of(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"no blob {key!r}") from None
        async with source:
            while chunk := await source.read(_READ_CHUNK):
                yield chunk
