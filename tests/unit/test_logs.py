"""What log lines may never show, and the keys every line about a job carries; pure."""

from __future__ import annotations

from typing import Any

import pytest

from receiver.logs import job_keys, scrub, scrub_values


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://app:pw@db:5432/jobs", "postgresql://***@db:5432/jobs"),
        (
            'GET https://delivery-eu1.bfl.ai/r/1/sample.jpeg?se=2025-01-01T00%3A00Z&sig=abc "200"',
            'GET https://delivery-eu1.bfl.ai/r/1/sample.jpeg?*** "200"',
        ),
        ("redis://:token@cache:6379/0?stream=events", "redis://***@cache:6379/0?***"),
        ("no url here", "no url here"),
        ("http://127.0.0.1:8080/webhooks/bfl/job-1", "http://127.0.0.1:8080/webhooks/bfl/job-1"),
    ],
)
def test_scrub_hides_url_credentials_and_query_strings(text: str, shown: str) -> None:
    assert scrub(text) == shown


def test_secret_keys_are_masked_and_urls_scrubbed_in_every_value() -> None:
    event: dict[str, Any] = {
        "event": "connect postgresql://u:pw@db/x",
        "Authorization": "Bearer t",
        "x-key": "k",
        "count": 3,
    }
    assert scrub_values(None, "info", event) == {
        "event": "connect postgresql://***@db/x",
        "Authorization": "***",
        "x-key": "***",
        "count": 3,
    }


def test_a_line_about_a_job_always_names_its_task() -> None:
    assert job_keys(None, "info", {"event": "job.created", "job_id": "j"}) == {
        "event": "job.created",
        "job_id": "j",
        "bfl_task_id": None,
    }
    assert job_keys(None, "info", {"event": "x", "job_id": "j", "bfl_task_id": "t"})["bfl_task_id"] == "t"
    assert "bfl_task_id" not in job_keys(None, "info", {"event": "worker.stopped"})
