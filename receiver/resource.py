"""The life cycle every backend shares: opened by `async with`, released by `aclose()`."""

from __future__ import annotations

from typing import Protocol, Self


class Resource(Protocol):
    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def aclose(self) -> None: ...


class ResourceBase:
    """`async with` support for a backend: `open()` on entry, `aclose()` on exit."""

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Build the backend from its URL; parse only, connect in `open`. This default takes no options."""
        return cls()

    async def open(self) -> None:
        """Connect or create what the backend needs; nothing by default."""

    async def aclose(self) -> None:
        """Release what `open` took; nothing by default."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
