"""Figures 1 and 3 again with the Redis sink as the only sink (8c, 8d): a relay process copies each
stream entry into the receiver's events file the moment Redis has it, so the events counted are the
ones in Redis. Each run writes a stream of its own, deleted afterwards. Skipped with a note when Redis
is unreachable. The baselines are those of figures 1 and 3 (measured then, or here if those did not run).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio as aioredis

from tests.bench import ack, completions
from tests.bench.context import Context
from tests.bench.launch import ROOT, Receiver
from tests.bench.procs import PYTHON, Proc, python_env
from tests.bench.report import Figure
from tests.bench.seed import SeededJob

REDIS = "redis://127.0.0.1:6379/0"
RELAY_READY_S = 20.0


async def _reachable() -> str | None:
    try:
        async with aioredis.Redis.from_url(REDIS, socket_connect_timeout=3) as client:
            await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def _delete(streams: list[str]) -> None:
    async with aioredis.Redis.from_url(REDIS) as client:
        if streams:
            await client.delete(*streams)


class Streams:
    """Receivers whose only sink is a fresh Redis stream, each with its relay to the events file."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.token = secrets.token_hex(4)
        self.names: list[str] = []
        self.relays: list[Proc] = []

    def seeded_receiver(self, name: str, count: int) -> tuple[Receiver, list[SeededJob]]:
        stream = f"bench-{self.token}-{len(self.names)}"
        self.names.append(stream)
        receiver, jobs = self.ctx.seeded_receiver(name, count, RECEIVER_SINKS=f"{REDIS}?stream={stream}")
        args = [PYTHON, "-m", "tests.bench.redis_relay", REDIS, stream, str(receiver.sink)]
        relay = self.ctx.procs.start(f"relay-{stream}", args, python_env(), ROOT)
        self.relays.append(relay)
        ready = receiver.sink.with_name(receiver.sink.name + ".ready")
        deadline = time.monotonic() + RELAY_READY_S
        while not ready.exists():
            relay.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis relay for {stream} did not start:\n{relay.tail()}")
            time.sleep(0.05)
        return receiver, jobs


@contextmanager
def streams(ctx: Context) -> Iterator[Streams]:
    made = Streams(ctx)
    try:
        yield made
    finally:
        for relay in made.relays:
            ctx.procs.stop(relay)
        asyncio.run(_delete(made.names))


def redis_sink(ctx: Context) -> list[Figure]:
    problem = asyncio.run(_reachable())
    if problem is not None:
        ctx.progress("redis", f"skipped: Redis unreachable at {REDIS} ({problem})")
        skipped = f"skipped: Redis unreachable ({problem})"
        return [
            Figure("8c", "webhooks acked/s, Redis sink", None, "", note=skipped),
            Figure("8d", "completions/s, 1 MiB, Redis sink", None, "", note=skipped),
        ]
    plan = ctx.plan
    with streams(ctx) as made:
        measured = ack.receiver_closed_loop(
            ctx, "ack-redis", lambda pool: made.seeded_receiver("ack-redis", pool), plan.ack_pools
        )
        label = f"webhooks acked/s, SQLite store, Redis sink, closed loop C={plan.ack_concurrency}"
        acks = ack.ack_figure("8c", label, measured, ack.bare_rate(ctx), ctx.bare_ack_detail)
        done = completions.completions(
            ctx,
            key="8d",
            start=lambda: made.seeded_receiver("completions-redis", plan.completions),
            label="SQLite store, Redis sink",
            name="completions-redis",
        )
    return [acks, done]
