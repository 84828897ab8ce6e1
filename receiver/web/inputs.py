"""An edit's input images into the blob store before its 202: those given as base64 as they were
decoded, those given by URL downloaded through `receiver.downloads` from the hosts RECEIVER_INPUT_HOSTS
allows and checked as a base64 image is. Several are downloaded at once, all within
RECEIVER_INPUT_FETCH_TIMEOUT_S; either every image is stored or none is. Each URL is counted by
outcome in `kontext_receiver_input_downloads_total`."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import httpx
import structlog

from receiver.bfl.validation import InputImage, Loc
from receiver.blobs import BlobStore, input_key
from receiver.blobs.inputs import store_input
from receiver.downloads import FetchPolicy, check_length, open_download, store_checked
from receiver.errors import (
    DownloadError,
    HostRefused,
    ImageRejected,
    InvalidRequest,
    Problem,
    StorageUnavailable,
)
from receiver.hosts import check_url
from receiver.metrics import Metrics
from receiver.models import StoredInput
from receiver.registry import redact

log = structlog.get_logger("receiver.inputs")

FETCH_CONCURRENCY = 4  # URL inputs of one request downloaded at once

InputField = tuple[Loc, InputImage | str]  # where an input image is in the body, and its value


def refused_hosts(fields: Sequence[InputField], policy: FetchPolicy) -> list[Problem]:
    """A problem for each URL whose host may not be asked, found before any download starts."""
    problems = []
    for loc, value in fields:
        if not isinstance(value, str):
            continue
        if not policy.allowed_hosts:
            message = f"images given by URL are turned off ({policy.setting} is empty): send it as base64"
            problems.append(Problem(loc, message, "url_not_allowed"))
            continue
        try:
            check_url(value, policy.allowed_hosts, policy.setting, policy.what)
        except HostRefused as exc:
            problems.append(Problem(loc, str(exc), "url_not_allowed"))
    return problems


async def store_edit_inputs(
    blobs: BlobStore,
    http: httpx.AsyncClient,
    policy: FetchPolicy,
    metrics: Metrics,
    timeout_s: float,
    job_id: str,
    fields: Sequence[InputField],
) -> tuple[StoredInput, ...]:
    """Every input image stored under the job's input keys, in order; `InvalidRequest` naming each one
    that may not or could not be downloaded, or is not an acceptable image, and then none stays stored.
    Other failures (the blob store's) are raised as they are, also with nothing left stored."""
    refused = refused_hosts(fields, policy)
    if refused:
        metrics.input_downloads.labels("refused").inc(len(refused))
        raise InvalidRequest(refused)
    stored: dict[int, StoredInput] = {}
    problems: dict[int, Problem] = {}
    failures: list[Exception] = []
    deadline = anyio.current_time() + timeout_s
    limiter = anyio.CapacityLimiter(FETCH_CONCURRENCY)

    async def store(index: int, loc: Loc, value: InputImage | str, group: anyio.abc.TaskGroup) -> None:
        try:
            if isinstance(value, InputImage):
                key = input_key(job_id, index, value.content_type)
                stored[index] = await store_input(blobs, key, value)
                return
            with anyio.CancelScope(deadline=deadline) as scope:
                async with limiter:
                    stored[index] = await fetch_input(http, value, job_id, index, blobs, policy)
            if scope.cancelled_caught:
                problems[index] = Problem(
                    loc, f"downloading the image did not finish within {timeout_s:g} s", "url_fetch_failed"
                )
                metrics.input_downloads.labels("failed").inc()
            else:
                metrics.input_downloads.labels("stored").inc()
                metrics.input_download_bytes.observe(stored[index].bytes)
        except DownloadError as exc:
            problems[index] = _problem(loc, exc)
            metrics.input_downloads.labels(_OUTCOMES[problems[index].type]).inc()
        except Exception as exc:  # raised below, once every download has stopped
            failures.append(exc)
            group.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as group:
            for index, (loc, value) in enumerate(fields):
                group.start_soon(store, index, loc, value, group)
    finally:
        if failures or problems or len(stored) < len(fields):  # also when cancelled from outside
            await discard(blobs, list(stored.values()))
    if failures:
        raise failures[0]
    if problems:
        raise InvalidRequest([problems[index] for index in sorted(problems)])
    return tuple(stored[index] for index in range(len(fields)))


async def fetch_input(
    http: httpx.AsyncClient, url: str, job_id: str, index: int, blobs: BlobStore, policy: FetchPolicy
) -> StoredInput:
    """Download input image number `index` from `url` into the blob store, checked on the way."""
    async with open_download(http, url, policy) as response:
        if not 200 <= response.status_code < 300:
            raise DownloadError(f"the image URL answered {response.status_code}", retryable=False)
        check_length(response, policy)
        image = await store_checked(
            response, lambda content_type: input_key(job_id, index, content_type), blobs, policy
        )
    blob = image.blob
    # A presigned URL's query is a credential, as a user and password are: neither is kept.
    source = redact(url)
    return StoredInput(
        image.key, blob.sha256, blob.size, image.content_type, image.width, image.height, source
    )


# What `kontext_receiver_input_downloads_total` counts a URL input refused for this problem as.
_OUTCOMES = {"url_not_allowed": "refused", "image_invalid": "invalid", "url_fetch_failed": "failed"}


def _problem(loc: Loc, exc: DownloadError) -> Problem:
    if isinstance(exc, HostRefused):
        return Problem(loc, str(exc), "url_not_allowed")
    if isinstance(exc, ImageRejected):
        return Problem(loc, str(exc), "image_invalid")
    return Problem(loc, f"could not download the image: {exc}", "url_fetch_failed")


async def discard(blobs: BlobStore, inputs: Sequence[StoredInput]) -> None:
    """Remove input images no job refers to; should that fail, they are only unused objects."""
    if not inputs:
        return
    with anyio.CancelScope(shield=True):
        try:
            await blobs.delete([item.key for item in inputs])
        except (OSError, StorageUnavailable) as exc:
            log.warning("job.inputs_not_removed", keys=[item.key for item in inputs], error=str(exc))
