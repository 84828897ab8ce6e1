"""How a sink's failure is treated; pure. Only a sink's own definite refusal (a `SinkError` it raised
with `retryable=False`) dead-letters an event at once: anything else, even an exception type nobody
here knows, may go away and is retried."""

from __future__ import annotations

from receiver.errors import SinkError, TransientError


def as_sink_error(exc: Exception) -> SinkError:
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, TransientError):
        return SinkError(str(exc), retryable=exc.retryable, retry_after=exc.retry_after)
    if isinstance(exc, TimeoutError):
        return SinkError("no answer in time (RECEIVER_SINK_TIMEOUT_S)", retryable=True)
    return SinkError(f"{type(exc).__name__}: {exc}", retryable=True)
