from __future__ import annotations

from receiver.sse import Message, parse
from receiver.stores import FeedEntry
from receiver.web.events import format_entry


def test_messages_are_dispatched_at_blank_lines_and_comments_skipped() -> None:
    lines = [
        "retry: 2000",
        "",
        ": heartbeat",
        "",
        "id: 7",
        "event: a",
        "data: {",
        "data: }",
        "",
        "data:x",
        "",
    ]
    assert list(parse(lines)) == [Message("a", "{\n}", "7"), Message("message", "x", "7")]


def test_an_unfinished_message_is_not_dispatched() -> None:
    assert list(parse(["id: 1", "data: half"])) == []


def test_what_the_receiver_writes_reads_back() -> None:
    entry = FeedEntry(12, 0.0, "kontext.job.state", "job-1", state="submitted")
    lines = format_entry(entry).split("\n")
    assert list(parse(lines)) == [
        Message("kontext.job.state", '{"job_id":"job-1","state":"submitted"}', "12")
    ]
