"""Figure 8: figures 1 and 3 again with the PostgreSQL store, each run in a schema of its own
(`?schema=bench_<random>_...`, all dropped afterwards). Skipped with a note when PostgreSQL is
unreachable. The baselines are those of figures 1 and 3 (measured then, or here if those did not run).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from tests.bench import ack, completions
from tests.bench.context import Context
from tests.bench.launch import Receiver
from tests.bench.report import Figure, relative
from tests.bench.seed import SeededJob, insert_jobs, make_jobs

DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def reachable() -> str | None:
    try:
        conn = await asyncpg.connect(DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def _drop(schemas: list[str]) -> None:
    conn = await asyncpg.connect(DSN, timeout=5)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # a name we made up
    finally:
        await conn.close()


class Schemas:
    """Fresh schemas, each seeded with new submitted jobs; every one is dropped when the block ends."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(4)
        self.names: list[str] = []

    def seeded(self, suffix: str, count: int) -> tuple[str, list[SeededJob]]:
        name = f"bench_{self.token}_{suffix}"
        self.names.append(name)
        url, jobs = f"{DSN}?schema={name}", make_jobs(count)
        asyncio.run(insert_jobs(url, jobs))
        return url, jobs


@contextmanager
def schemas() -> Iterator[Schemas]:
    made = Schemas()
    try:
        yield made
    finally:
        if made.names:
            asyncio.run(_drop(made.names))


def postgres(ctx: Context) -> list[Figure]:
    problem = asyncio.run(reachable())
    if problem is not None:
        ctx.progress("postgres", f"skipped: PostgreSQL unreachable at {DSN} ({problem})")
        skipped = f"skipped: PostgreSQL unreachable ({problem})"
        return [
            Figure("8a", "webhooks acked/s, PostgreSQL store", None, "", note=skipped),
            Figure("8b", "completions/s, 1 MiB, PostgreSQL store", None, "", note=skipped),
        ]
    plan = ctx.plan
    with schemas() as made:

        def start(pool: int) -> tuple[Receiver, list[SeededJob]]:
            url, jobs = made.seeded(f"ack{len(made.names)}", pool)
            return ctx.receiver("ack-postgres", url), jobs

        measured = ack.receiver_closed_loop(ctx, "ack-postgres", start, plan.ack_pools_postgres)
        label = f"webhooks acked/s, PostgreSQL store, file sink, closed loop C={plan.ack_concurrency}"
        bare = ack.ack_figure("8a", label, measured, ack.bare_rate(ctx), ctx.bare_ack_detail)
        acks = relative(bare, label, ctx.figures.get("1"), "figure 1 (SQLite)", 0.6)
        url, jobs = made.seeded("done", plan.completions)
        httpx_share = completions.completions(
            ctx, key="8b", store_url=url, jobs=jobs, label="PostgreSQL store, file sink"
        )
        done = relative(httpx_share, httpx_share.name, ctx.figures.get("3"), "figure 3 (SQLite)", 0.8)
        ctx.progress("postgres", f"dropping schemas {', '.join(made.names)}")
    return [acks, done]
