"""`Range: bytes=...` requests (RFC 9110 section 14) for the stored images; pure.

One range is served as 206; a header that is not a single well-formed byte range is ignored (the
whole image, 200), as the RFC allows; a range that starts past the end is 416.
"""

from __future__ import annotations

import re

_SPEC = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(Exception):
    """The range lies wholly outside the image."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of the one range `header` asks for within `size` bytes, or None for
    the whole image; `RangeNotSatisfiable` when it asks for none of them."""
    match = _SPEC.fullmatch((header or "").replace(" ", ""))
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - int(last)), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(size, int(last) + 1) if last else size
