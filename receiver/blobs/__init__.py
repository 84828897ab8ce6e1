"""Image storage, chosen by `RECEIVER_BLOB_URL`'s scheme."""

from __future__ import annotations

from receiver.blobs.base import BlobStore, StoredBlob, image_key, input_key
from receiver.registry import Registry

BLOB_STORES: Registry[BlobStore] = Registry(
    "blob store",
    {
        "file": "receiver.blobs.local:LocalBlobStore",
        "memory": "receiver.blobs.memory:MemoryBlobStore",
        "s3": "receiver.blobs.s3:S3BlobStore",
    },
)
blobs_from_url = BLOB_STORES.from_url

__all__ = ["BLOB_STORES", "BlobStore", "StoredBlob", "blobs_from_url", "image_key", "input_key"]
