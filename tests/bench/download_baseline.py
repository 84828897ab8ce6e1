"""The completion baseline: plain httpx downloading the same sample N times, in a process of its own.

`python -m tests.bench.download_baseline URL COUNT CONCURRENCY SEQUENTIAL OUT.json`: first one round
of CONCURRENCY downloads to open the connections, then COUNT downloads with at most CONCURRENCY in
flight (timed as a whole: downloads per second), then SEQUENTIAL single downloads one after the other
(timed each: the floor under any webhook-to-event latency). Runs on uvloop, as the receiver does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import uvloop


async def _get(client: httpx.AsyncClient, url: str, size: int | None) -> int:
    response = await client.get(url)
    if response.status_code != 200 or (size is not None and len(response.content) != size):
        raise RuntimeError(f"download answered {response.status_code} with {len(response.content)} bytes")
    return len(response.content)


async def measure(url: str, count: int, concurrency: int, sequential: int) -> dict[str, object]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        size = await _get(client, url, None)
        await asyncio.gather(*(_get(client, url, size) for _ in range(concurrency)))
        slots = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with slots:
                await _get(client, url, size)

        start, cpu_start = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(count)))
        elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        latencies = []
        for _ in range(sequential):
            began = time.perf_counter()
            await _get(client, url, size)
            latencies.append(time.perf_counter() - began)
    return {
        "bytes": size,
        "count": count,
        "concurrency": concurrency,
        "elapsed_s": elapsed,
        "rate": count / elapsed,
        "cpu_ms_per_download": cpu_s * 1e3 / count,
        "sequential_s": latencies,
    }


def main(argv: list[str]) -> int:
    url, count, concurrency, sequential, out = argv
    result = uvloop.run(measure(url, int(count), int(concurrency), int(sequential)))
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
