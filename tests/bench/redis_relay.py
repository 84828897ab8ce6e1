"""`python -m tests.bench.redis_relay URL STREAM FILE`: every entry of a Redis stream, as it arrives,
appended to FILE as the event's JSON line, so the run's file watcher sees an event when Redis has it.
Reads from the stream's start, so starting late loses nothing; touches FILE.ready once connected."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import redis.asyncio as aioredis


async def relay(url: str, stream: str, path: Path) -> None:
    async with aioredis.Redis.from_url(url) as client:
        await client.ping()
        with path.open("ab", buffering=0) as out:
            Path(f"{path}.ready").touch()  # noqa: ASYNC240
            last: bytes | str = "0"
            while True:
                answer: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = await client.xread(
                    {stream: last}, count=1000, block=1000
                )  # type: ignore[assignment]
                for _, entries in answer:
                    out.write(b"".join(fields[b"event"] + b"\n" for _, fields in entries))
                    last = entries[-1][0]


if __name__ == "__main__":
    asyncio.run(relay(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
