"""The retry rules: what is retried, the backoff schedule, Retry-After, and the polling budget."""

from __future__ import annotations

import httpx
import pytest

from receiver.errors import DownloadError, SampleRejected, SinkError, UpstreamError
from receiver.retry import MAX_INLINE_WAIT_S, backoff, is_retryable, parse_retry_after
from receiver.worker.budget import PollBudget
from tests.clock import FakeClock

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UpstreamError(503, "busy", retryable=True), True),
        (UpstreamError(422, "bad", retryable=False), False),
        (UpstreamError(429, "slow down", retryable=True, retry_after=2.0), 2.0),
        (UpstreamError(429, "slow down", retryable=True, retry_after=MAX_INLINE_WAIT_S + 1), False),
        (DownloadError("cut short", retryable=True), True),
        (DownloadError("expired", retryable=False, url_expired=True), False),
        (SampleRejected("too big"), False),
        (SinkError("503", retryable=True, retry_after=1.0), 1.0),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("incomplete body"), True),
        (ValueError("a bug"), False),
    ],
)
def test_is_retryable(error: Exception, expected: bool | float) -> None:
    assert is_retryable(error) == expected


def test_backoff_grows_is_capped_and_jittered_reproducibly() -> None:
    delays = [backoff(attempt, 1.0, 60.0, "job-1") for attempt in range(1, 10)]
    for attempt, delay in enumerate(delays, start=1):
        nominal = min(60.0, 2.0 ** (attempt - 1))
        assert nominal / 2 <= delay <= nominal
    assert delays == [backoff(attempt, 1.0, 60.0, "job-1") for attempt in range(1, 10)]
    assert delays != [backoff(attempt, 1.0, 60.0, "job-2") for attempt in range(1, 10)]


def test_backoff_never_earlier_than_retry_after() -> None:
    assert backoff(1, 1.0, 60.0, "job-1", retry_after=30.0) == 30.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("Tue, 14 Nov 2023 22:13:40 GMT", 20.0),
        ("Tue, 14 Nov 2023 22:12:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_poll_budget_spaces_calls() -> None:
    clock = FakeClock(100.0)
    budget = PollBudget(per_second=4, clock=clock)
    assert [budget.reserve() for _ in range(3)] == [0.0, 0.25, 0.5]
    clock.advance(2.0)  # idle time is not banked as a burst
    assert [budget.reserve() for _ in range(2)] == [0.0, 0.25]
