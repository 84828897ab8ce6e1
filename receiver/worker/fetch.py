"""Download a result image straight into the blob store, checked on the way through (see
`receiver.downloads`); what its answer says decides whether a retry, or a fresh URL, can help."""

from __future__ import annotations

import httpx

from receiver.blobs import BlobStore, image_key
from receiver.downloads import FetchPolicy, check_length, open_download, store_checked
from receiver.errors import DownloadError
from receiver.models import ImageInfo

_EXPIRED = frozenset({401, 403, 404, 410})
_RETRYABLE = frozenset({408, 425, 429})


async def fetch_sample(
    http: httpx.AsyncClient, url: str, job_id: str, blobs: BlobStore, policy: FetchPolicy
) -> ImageInfo:
    """Download `url` (redirects followed only to allowed hosts) into the job's image key."""
    async with open_download(http, url, policy) as response:
        _check_response(response, policy)
        image = await store_checked(response, lambda kind: image_key(job_id, kind), blobs, policy)
    return ImageInfo(
        url=image.blob.url,
        sha256=image.blob.sha256,
        bytes=image.blob.size,
        content_type=image.content_type,
        width=image.width,
        height=image.height,
    )


def _check_response(response: httpx.Response, policy: FetchPolicy) -> None:
    status = response.status_code
    if status in _EXPIRED:
        raise DownloadError(f"sample URL refused with {status} (expired?)", retryable=False, url_expired=True)
    if status in _RETRYABLE or status >= 500:
        raise DownloadError(f"sample download answered {status}", retryable=True)
    if status != 200:
        raise DownloadError(f"sample download answered {status}", retryable=False)
    check_length(response, policy)
