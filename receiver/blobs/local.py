"""Images in a local folder: each written to a temporary file, flushed, then renamed into place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Collection
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from receiver.blobs.base import StoredBlob
from receiver.errors import NotFound
from receiver.registry import file_path
from receiver.resource import ResourceBase

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

_READ_CHUNK = 256 * 1024
WRITE_BATCH = 256 * 1024


def _append(path: Path, fd: int, chunks: list[bytes], digest: Hash) -> int:
    """Write and hash `chunks` (opening `path` on the first call); return the descriptor."""
    opened = fd < 0
    if opened:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in chunks:
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    except BaseException:
        if opened:  # the caller never got this descriptor: close it here
            os.close(fd)
        raise
    return fd


def _finish(temp: Path, fd: int, chunks: list[bytes], digest: Hash, final: Path) -> None:
    """Write the rest, flush it to disk, and rename the file into place; on failure leave nothing."""
    try:
        fd = _append(temp, fd, chunks, digest)
        os.fsync(fd)
    except BaseException:
        _discard(temp, fd)
        raise
    os.close(fd)
    try:
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    # The rename itself is on disk only once the folder is: else a crash could lose the file while
    # the store already says the image is stored.
    folder = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _discard(temp: Path, fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    temp.unlink(missing_ok=True)


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

    async def put(self, key: str, chunks: AsyncIterable[bytes], content_type: str) -> StoredBlob:
        final = self.path_of(key)
        temp = self.root / f".{key}.{uuid.uuid4().hex}.part"
        fd = -1
        digest = hashlib.sha256()
        pending: list[bytes] = []
        size = written = 0
        try:
            # Chunks are written a batch at a time: one thread hop per WRITE_BATCH bytes, not per chunk.
            async for chunk in chunks:
                pending.append(chunk)
                size += len(chunk)
                if size >= WRITE_BATCH:
                    fd = await anyio.to_thread.run_sync(_append, temp, fd, pending, digest)
                    pending, written, size = [], written + size, 0
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_discard, temp, fd)
            raise
        await anyio.to_thread.run_sync(_finish, temp, fd, pending, digest, final)
        return StoredBlob(final.as_uri(), digest.hexdigest(), written + size)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        try:
            source = await anyio.open_file(self.path_of(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"no blob {key!r}") from None
        async with source:
            if start:
                await source.seek(start)
            left = float("inf") if end is None else end - start
            while left > 0 and (chunk := await source.read(int(min(_READ_CHUNK, left)))):
                left -= len(chunk)
                yield chunk

    async def delete(self, keys: Collection[str]) -> None:
        paths = [self.path_of(key) for key in keys]

        def unlink() -> None:
            for path in paths:
                path.unlink(missing_ok=True)

        await anyio.to_thread.run_sync(unlink)
