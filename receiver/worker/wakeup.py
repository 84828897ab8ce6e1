"""A level-triggered wake-up signal for a background loop."""

from __future__ import annotations

import anyio


class Wakeup:
    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()

    async def wait(self, seconds: float) -> None:
        """Return when set (also if set before this call) or after `seconds`."""
        with anyio.move_on_after(seconds):
            await self._event.wait()
