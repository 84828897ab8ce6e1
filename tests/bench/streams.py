"""Figure 11: what 500 idle `GET /v1/events` streams cost the receiver, in memory and CPU.

The streams are opened together, then left alone: nothing is submitted, so all the receiver does is
send each stream its heartbeat (every RECEIVER_SSE_HEARTBEAT_S, 15 s by default; the window spans one).
"""

from __future__ import annotations

import time

import anyio
import httpx

from tests.bench.context import Context
from tests.bench.launch import API_TOKEN, Receiver
from tests.bench.proc_info import tree_cpu_seconds, tree_memory_kib
from tests.bench.report import Figure

STREAMS = 500
MEMORY_TARGET_MB = 50.0


def idle_streams(ctx: Context) -> list[Figure]:
    receiver = ctx.receiver("idle-streams", RECEIVER_MAX_STREAMS=str(STREAMS))
    window_s = 8.0 if ctx.plan.quick else 16.0
    before_kib = tree_memory_kib(receiver.proc.pid, "VmRSS")
    reading = anyio.run(_hold_streams, receiver, window_s)
    ctx.progress("11 idle streams", f"{STREAMS} streams open for {window_s:.0f}s")
    grown_mb = (reading["rss_kib"] - before_kib) / 1024
    cpu_share = reading["cpu_s"] / window_s
    detail = {"streams": STREAMS, "window_s": window_s, "rss_before_kib": before_kib} | reading
    return [
        Figure(
            "11a",
            f"memory of {STREAMS} idle SSE streams",
            round(grown_mb, 1),
            "MB",
            target=f"< {MEMORY_TARGET_MB:.0f} MB",
            met=grown_mb < MEMORY_TARGET_MB,
            detail=detail,
        ),
        Figure(
            "11b",
            f"CPU of {STREAMS} idle SSE streams (heartbeats only)",
            round(cpu_share * 100, 2),
            "% of a core",
            note="informative: what the heartbeats cost",
            detail=detail,
        ),
    ]


async def _hold_streams(receiver: Receiver, window_s: float) -> dict[str, float]:
    opened = anyio.Event()
    count = 0
    reading: dict[str, float] = {}
    limits = httpx.Limits(max_connections=STREAMS + 10)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=receiver.url, headers=headers, limits=limits, timeout=60) as http,
        anyio.create_task_group() as tg,
    ):

        async def hold() -> None:
            nonlocal count
            async with http.stream("GET", "/v1/events") as stream:
                if stream.status_code != 200:
                    raise RuntimeError(f"stream answered {stream.status_code}")
                async for _ in stream.aiter_lines():  # the first line is `retry:`; then heartbeats
                    count += 1
                    if count == STREAMS:
                        opened.set()

        for _ in range(STREAMS):
            tg.start_soon(hold)
        with anyio.fail_after(60):
            await opened.wait()
        cpu_before, started = tree_cpu_seconds(receiver.proc.pid), time.monotonic()
        await anyio.sleep(window_s)
        reading["cpu_s"] = tree_cpu_seconds(receiver.proc.pid) - cpu_before
        reading["measured_s"] = time.monotonic() - started
        reading["rss_kib"] = tree_memory_kib(receiver.proc.pid, "VmRSS")
        reading["lines_received"] = count
        tg.cancel_scope.cancel()
    return reading
