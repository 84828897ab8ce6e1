"""`If-None-Match` (RFC 9110 section 13.1.2) for the stored images, whose ETag is their sha256; pure."""

from __future__ import annotations


def none_match_fails(header: str | None, etag: str) -> bool:
    """True when `If-None-Match: header` names `etag` (or is `*`): the client's copy is current (304).
    The comparison is weak, as the RFC asks for this header: `W/"x"` matches `"x"`."""
    if header is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag.removeprefix("W/") in tags
