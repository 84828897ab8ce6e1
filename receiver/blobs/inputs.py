"""Input images in the blob store: written when an edit is accepted, read back when it is submitted."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.to_thread

from receiver.bfl.validation import InputImage
from receiver.blobs.base import BlobStore, input_key
from receiver.errors import InputUnavailable, NotFound
from receiver.models import StoredInput


async def store_inputs(
    blobs: BlobStore, job_id: str, images: Sequence[InputImage]
) -> tuple[StoredInput, ...]:
    """Write a job's input images; if one fails, those already written are removed again."""
    stored: list[StoredInput] = []
    try:
        for index, image in enumerate(images):
            key = input_key(job_id, index, image.content_type)
            blob = await blobs.put(key, _once(image.data), image.content_type)
            stored.append(
                StoredInput(key, blob.sha256, blob.size, image.content_type, image.width, image.height)
            )
    except BaseException:
        with anyio.CancelScope(shield=True):
            await blobs.delete([item.key for item in stored])
        raise
    return tuple(stored)


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
