"""Every store call with a deadline, and one error for a store that cannot be reached.

`StoreUnavailable` (a 503 with Retry-After on the HTTP side) is raised when a call does not finish
within the timeout, or fails the way an unreachable or restarting server fails: a refused or reset
connection, or one of the errors the backend lists in its `unavailable_errors`. Nothing else changes:
a call either completed (committed) or raised.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio

from receiver.errors import StoreUnavailable
from receiver.stores.base import Store

RETRY_AFTER_S = 5.0


class GuardedStore:
    def __init__(self, inner: Store, timeout_s: float) -> None:
        self._inner = inner
        self._timeout_s = timeout_s
        self._unavailable: tuple[type[BaseException], ...] = (
            OSError,
            *getattr(inner, "unavailable_errors", ()),
        )

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return self._guarded(name, attribute)

    def _guarded(self, name: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(call)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                with anyio.fail_after(self._timeout_s):
                    return await call(*args, **kwargs)
            except TimeoutError:
                raise StoreUnavailable(
                    f"the store did not answer {name} within {self._timeout_s:g} s", retry_after=RETRY_AFTER_S
                ) from None
            except self._unavailable as exc:
                raise StoreUnavailable(
                    f"the store cannot be reached ({type(exc).__name__})", retry_after=RETRY_AFTER_S
                ) from exc

        return guarded


def guarded(store: Store, timeout_s: float) -> Store:
    """`store` with every coroutine method under `timeout_s` (see the module docstring)."""
    return cast(Store, GuardedStore(store, timeout_s))
