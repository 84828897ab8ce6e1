"""`kontext-receiver edit` follows its job on `/v1/events`: a dropped stream is resumed where it broke
off, after waits that grow while the receiver stays unreachable and start small again once it answers."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx

from receiver.cli import RECONNECT_BASE_S, _follow
from receiver.progress import Progress


def entry(seq: int, state: str) -> bytes:
    data = json.dumps({"job_id": "job-1", "state": state})
    return f"id: {seq}\nevent: kontext.job.state\ndata: {data}\n\n".encode()


class CutStream(httpx.SyncByteStream):
    """Sends `chunks`, then the connection breaks."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("connection reset")


def test_a_dropped_stream_is_resumed_after_growing_waits() -> None:
    seen: list[str | None] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("last-event-id"))
        if len(seen) <= 2:
            raise httpx.ConnectError("connection refused", request=request)
        if len(seen) == 3:
            return httpx.Response(200, stream=CutStream(entry(5, "submitted")))
        return httpx.Response(200, content=entry(6, "received") + entry(7, "published"))

    sleeps: list[float] = []
    out = io.StringIO()
    with httpx.Client(transport=httpx.MockTransport(receiver), base_url="http://receiver") as http:
        _follow(http, "job-1", Progress(out), timeout=60, sleep=sleeps.append)

    assert seen == [None, None, None, "5"]  # resumed after the last entry it saw
    assert len(sleeps) == 3
    assert sleeps[0] < sleeps[1]  # still unreachable: a longer wait
    assert sleeps[2] == sleeps[0] <= RECONNECT_BASE_S  # it answered in between: short again
    assert "job job-1: published" in out.getvalue()
