"""Backend URLs shown in logs, API answers and delivery records carry no credentials."""

from __future__ import annotations

import pytest

from receiver.registry import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("file://data/events.jsonl", "file://data/events.jsonl"),
        ("https://user:secret@hooks.example.com/x", "https://***@hooks.example.com/x"),
        ("https://token@hooks.example.com:8443/x", "https://***@hooks.example.com:8443/x"),
        ("https://hooks.example.com/x?token=secret", "https://hooks.example.com/x?***"),
        ("redis://:secret@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown
