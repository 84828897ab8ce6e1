"""The feed: every change worth watching (a job's state, a completion event, a delivery's state) in the
order the store committed it, numbered by a sequence per store. `GET /v1/events` streams it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anyio

JOB_STATE = "kontext.job.state"
DELIVERY_STATE = "kontext.delivery.state"

FEED_COLUMNS = "seq, at, type, job_id, state, sink, body"


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    at: float  # epoch seconds, by the store's clock
    type: str  # JOB_STATE, DELIVERY_STATE, or a completion event's CloudEvents type
    job_id: str
    state: str | None = None  # the job's new state, or the delivery's
    sink: str | None = None  # for DELIVERY_STATE
    event: dict[str, Any] | None = None  # the CloudEvent, for completion events

    def data(self) -> dict[str, Any]:
        """What an SSE client gets: the CloudEvent itself, or a small document naming the change."""
        if self.event is not None:
            return self.event
        data: dict[str, Any] = {"job_id": self.job_id, "state": self.state}
        if self.sink is not None:
            data["sink"] = self.sink
        return data


def entry_from_row(row: Any) -> FeedEntry:
    seq, at, kind, job_id, state, sink, body = row
    event = json.loads(body) if isinstance(body, str) else body
    return FeedEntry(int(seq), float(at), kind, job_id, state, sink, event)


class Signal:
    """Wakes everyone waiting for the next change: take `changed()` before reading the feed, then wait on
    it, and a change committed in between is not missed."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def changed(self) -> anyio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, anyio.Event()
        event.set()
