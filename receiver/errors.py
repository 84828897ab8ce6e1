"""One exception tree for the whole package. HTTP status mapping lives only in `receiver.web`."""

from __future__ import annotations

from dataclasses import dataclass


class ReceiverError(Exception):
    """Base of every error kontext-receiver raises on purpose."""


class ConfigError(ReceiverError):
    """The configuration is missing or malformed; the process should not start."""


class MissingDependency(ConfigError):
    """A backend was configured whose optional dependency is not installed."""


class StartupError(ReceiverError):
    """A resource the settings name (the job store, the blob store, a sink) could not be opened; the
    process cannot start. The message says which, without its secrets."""


@dataclass(frozen=True)
class Problem:
    """One invalid field, in the shape of BFL's 422 bodies (`loc`, `msg`, `type`)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    def as_dict(self) -> dict[str, object]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class InvalidRequest(ReceiverError):
    """A request body failed validation; nothing was changed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))


class BadRequest(ReceiverError):
    """Malformed input (not JSON, wrong shape)."""


class Unauthorized(ReceiverError):
    """Missing or wrong credentials."""


class Forbidden(ReceiverError):
    """Valid credentials, but the request may not be made this way (a browser POST without its CSRF token)."""


class Overloaded(ReceiverError):
    """A per-process limit is reached; the client should retry later, or elsewhere."""


class NotFound(ReceiverError):
    """The addressed resource does not exist."""


class Conflict(ReceiverError):
    """The request is valid but clashes with the resource's current state."""


class RequestTimeout(ReceiverError):
    """The client took too long to send its request."""


class PayloadTooLarge(ReceiverError):
    """A body or download exceeded its size cap."""


class InputUnavailable(ReceiverError):
    """A job's input image is gone from the blob store, or is not the one that was written."""


class RetryLater(ReceiverError):
    """The request cannot be served now; the client should try again after `retry_after` seconds.
    Nothing was changed."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Unavailable(RetryLater):
    """Something the request needs is down or busy (the store, BFL)."""


class StoreUnavailable(Unavailable):
    """The job store did not answer in time, or not at all."""


class TooManyRequests(RetryLater):
    """A bound on queued work was reached."""


class TransientError(ReceiverError):
    """A failure that may go away: `retryable` says whether trying again can help, and `retry_after`
    (seconds) how long the other side asked us to wait, if it said."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class UpstreamError(TransientError):
    """BFL answered with an error status (0: it could not be reached)."""

    def __init__(
        self, status: int, detail: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        super().__init__(
            f"upstream answered {status}: {detail}", retryable=retryable, retry_after=retry_after
        )


class DownloadError(TransientError):
    """A result image could not be downloaded."""

    def __init__(
        self, message: str, *, retryable: bool, url_expired: bool = False, retry_after: float | None = None
    ) -> None:
        self.url_expired = url_expired
        super().__init__(message, retryable=retryable, retry_after=retry_after)


class StorageUnavailable(TransientError):
    """The blob store could not be read or written (unreachable, refused, or failing)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class SinkError(TransientError):
    """A sink did not take an event."""


class SampleRejected(DownloadError):
    """The download was refused on policy: host not allowed, too large, or not an image."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class HostRefused(SampleRejected):
    """The URL's host, or an address it resolves to, is not allowed to be downloaded from."""


class ImageRejected(SampleRejected):
    """The downloaded body is too large, or not an acceptable image."""
