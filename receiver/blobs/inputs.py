"""Input images in the blob store: written when an edit is accepted, read back when it is submitted."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread

from receiver.bfl.validation import InputImage
from receiver.blobs.base import BlobStore
from receiver.errors import InputUnavailable, NotFound
from receiver.models import StoredInput


async def store_input(blobs: BlobStore, key: str, image: InputImage) -> StoredInput:
    """Write an input image given as base64 (decoded and checked)."""
    blob = await blobs.put(key, _once(image.data), image.content_type)
    return StoredInput(key, blob.sha256, blob.size, image.content_type, image.width, image.height)


async def read_input(blobs: BlobStore, stored: StoredInput) -> bytes:
    """An input image's bytes, checked against the digest taken when it was written."""
    try:
        data = b"".join([chunk async for chunk in blobs.read(stored.key)])
    except NotFound:
        raise InputUnavailable(f"input image {stored.key} is missing from the blob store") from None
    digest = await anyio.to_thread.run_sync(lambda: hashlib.sha256(data).hexdigest())
    if digest != stored.sha256:
        raise InputUnavailable(f"input image {stored.key} does not match its sha256 {stored.sha256}")
    return data


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
