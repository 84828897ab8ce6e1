"""Server-side thumbnails for the dashboard: Pillow resizes, results are cached by the image's sha256."""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio.to_thread
from PIL import Image

CONTENT_TYPE = "image/webp"


def thumbnail(data: bytes, width: int) -> bytes:
    """`data` scaled down to `width` pixels wide (never up), as WebP; pure."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (width, width * 4))  # JPEG: decode at a reduced size straight away
        small = image.convert("RGB")
        if small.width > width:
            small = small.resize(
                (width, max(1, round(small.height * width / small.width))), Image.Resampling.LANCZOS
            )
        out = io.BytesIO()
        small.save(out, "WEBP", quality=80)
        return out.getvalue()


@dataclass
class ThumbnailCache:
    """Thumbnails by (sha256, width), least recently used dropped past `max_bytes`."""

    max_bytes: int = 32 * 1024 * 1024
    _entries: OrderedDict[tuple[str, int], bytes] = field(default_factory=OrderedDict)
    _bytes: int = 0

    async def get(self, sha256: str, width: int, load: Callable[[], Awaitable[bytes]]) -> bytes:
        """The thumbnail of the image with `sha256`; `load` reads the image when it is not cached."""
        key = (sha256, width)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        made = await anyio.to_thread.run_sync(thumbnail, await load(), width)
        self._entries[key] = made
        self._bytes += len(made)
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= len(dropped)
        return made
