"""What may be retried, and when; pure.

`is_retryable` is the one predicate every in-process retry (stamina) uses. The durable schedule (a job's
`due_at`, a delivery's `next_at`) uses `backoff`, so a retry survives a restart.
"""

from __future__ import annotations

import email.utils
import zlib

import httpx

from receiver.errors import TransientError

# An in-process retry waits at most this long; a longer Retry-After goes to the durable schedule.
MAX_INLINE_WAIT_S = 5.0


def is_retryable(exc: Exception) -> bool | float:
    """stamina backoff hook: False to stop, True to back off as usual, or the seconds to wait."""
    if isinstance(exc, TransientError):
        if not exc.retryable:
            return False
        if exc.retry_after is None:
            return True
        return exc.retry_after if exc.retry_after <= MAX_INLINE_WAIT_S else False
    return isinstance(exc, httpx.TransportError)  # timeouts, resets, a body cut short


def backoff(attempt: int, base_s: float, cap_s: float, key: str, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter for the `attempt`-th retry (1, 2, ...). The jitter is fixed per
    `key` and attempt, so schedules spread out yet tests are reproducible. Never sooner than `retry_after`."""
    delay = min(cap_s, base_s * 2 ** min(max(attempt - 1, 0), 30))
    jitter = (zlib.crc32(f"{key}:{attempt}".encode()) % 1000) / 1000
    return float(max(delay * (0.5 + jitter / 2), retry_after or 0.0))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)
