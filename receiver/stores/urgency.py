"""Which writes someone is waiting on: a store may commit those ahead of background work.

The webhook handler marks its writes urgent (BFL is waiting for the answer); downloads, claims and
deliveries are not. A context variable carries the mark from the handler down to the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_urgent: ContextVar[bool] = ContextVar("urgent_write", default=False)


@contextmanager
def urgent() -> Iterator[None]:
    token = _urgent.set(True)
    try:
        yield
    finally:
        _urgent.reset(token)


def is_urgent() -> bool:
    return _urgent.get()
