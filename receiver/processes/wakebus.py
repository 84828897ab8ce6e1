"""Wake-ups across the processes of one `serve`: a byte per kind of work, down a pipe to each worker.

The web processes write (`WakeSender`), each worker process reads its own pipe (`listen`) and wakes its
loops. A full pipe means wake-ups are already waiting to be read, so nothing more needs to be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Sequence

from receiver.worker.handover import Work

_WORK = tuple(Work)
_CODE = {work: bytes([n]) for n, work in enumerate(_WORK)}


class WakeSender:
    def __init__(self, fds: Sequence[int]) -> None:
        self.fds = list(fds)
        for fd in self.fds:
            os.set_blocking(fd, False)

    def send(self, work: Iterable[Work]) -> None:
        data = b"".join(_CODE[name] for name in work)
        for fd in self.fds:
            # Full: that worker has wake-ups to read already. Gone: that worker is stopping.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(fd, data)


def listen(fd: int, wake: Callable[..., None]) -> None:
    """Call `wake(*work)` on this event loop for what arrives on `fd`, until its writers are gone."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if not data:  # every writer has exited
            loop.remove_reader(fd)
            return
        wake(*{_WORK[code] for code in data if code < len(_WORK)})

    loop.add_reader(fd, readable)
