"""Test-wide set-up: structured logs at warning level, so a failure's output shows what matters."""

from __future__ import annotations

from receiver.logs import configure_logging

configure_logging("warning", json=False)
