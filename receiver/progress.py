"""A one-line progress display for long waits: a spinner on a terminal, a line per change otherwise."""

from __future__ import annotations

import itertools
import sys
import time
from typing import TextIO

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Progress:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.frames = itertools.cycle(_FRAMES)
        self.last = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, status: str) -> None:
        elapsed = self.elapsed()
        if self.tty:
            self.stream.write(f"\r\x1b[K{next(self.frames)} {status}  {elapsed:5.1f}s")
            self.stream.flush()
        elif status != self.last:
            self.stream.write(f"[{elapsed:6.1f}s] {status}\n")
            self.stream.flush()
        self.last = status

    def done(self, status: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + f"{status} ({self.elapsed():.1f}s)\n")
        self.stream.flush()
