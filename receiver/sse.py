"""Reading a Server-Sent Events stream (the `edit` command's progress, tests); pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    event: str  # "message" when the stream named none
    data: str
    id: str | None = None


def parse(lines: Iterable[str]) -> Iterator[Message]:
    """Messages from the stream's lines (without their line ends), as the SSE spec dispatches them:
    at a blank line, `data:` lines joined, comments (`:` lines) and `retry:` skipped."""
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Message(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value
