"""`GET /v1/events`: the store's feed as Server-Sent Events, resumable with `Last-Event-ID`.

Each entry goes out as `id: <feed number>`, `event: <type>`, `data: <JSON>`. The numbers come from the
store, so a client that reconnects to another replica on the same store resumes where it was. Without
`Last-Event-ID` (or `?after=`) a stream starts with what happens next; with `?job=ID`, with that job's
first entry.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from receiver.errors import InvalidRequest, Problem
from receiver.stores import FeedEntry, Store
from receiver.web.common import require_token, services
from receiver.web.limits import Slots
from receiver.web.schemas import EventsQuery, validate

BATCH = 100
RETRY_MS = 2000  # how long a browser's EventSource waits before it reconnects


class EventStream(StreamingResponse):
    """A streaming response that gives its slot back however it ends (even if it never started)."""

    def __init__(self, body: AsyncIterator[str], slots: Slots) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots.release()


async def stream_events(request: Request) -> EventStream:
    require_token(request)
    svc = services(request)
    query = validate(EventsQuery, dict(request.query_params), "query")
    last_id = request.headers.get("last-event-id")
    if last_id is not None and not last_id.strip().isdigit():
        raise InvalidRequest(
            [Problem(("header", "Last-Event-ID"), "must be an event id a stream sent", "int")]
        )
    after = int(last_id) if last_id is not None else query.after
    if after is None:
        after = 0 if query.job else await svc.store.feed_head()
    slots: Slots = request.app.state.streams
    slots.acquire()
    return EventStream(_events(svc.store, after, query.job, query.types, svc.settings.heartbeat_s), slots)


async def _events(
    store: Store, after: int, job_id: str | None, types: tuple[str, ...], heartbeat_s: float
) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    while True:
        changed = store.feed_changed()  # before reading: a change committed meanwhile still wakes us
        entries = await store.feed(after, job_id=job_id, types=types, limit=BATCH)
        if entries:
            yield "".join(map(format_entry, entries))
            after = entries[-1].seq
        if len(entries) == BATCH:
            continue
        with anyio.move_on_after(heartbeat_s) as idle:
            await changed.wait()
        if idle.cancelled_caught:
            yield ": heartbeat\n\n"


def format_entry(entry: FeedEntry) -> str:
    data = json.dumps(entry.data(), separators=(",", ":"))
    return f"id: {entry.seq}\nevent: {entry.type}\ndata: {data}\n\n"
