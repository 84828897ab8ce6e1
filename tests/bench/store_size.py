"""Figures 9 and 10.

9: figures 1 and 3 (8a and 8b on PostgreSQL) again with `Plan.settled_jobs` settled jobs already in
   the store (see `tests.bench.settled`), against the same figures with an empty store in this run.
10: CPU time the receiver's processes spent per completed 1 MiB edit in figure 3 (webhook, download,
   hash, store, event), beside the polling loop's CPU per edit (0.5 s polling, figure 5: submit and
   polls, no download) and plain httpx's per 1 MiB download (figure 3's baseline).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from tests.bench import ack, completions, postgres, settled
from tests.bench.context import Context
from tests.bench.launch import Receiver
from tests.bench.report import Figure, ratio, relative
from tests.bench.seed import SeededJob, insert_jobs, make_jobs

TARGET = 0.9


@dataclass(frozen=True)
class Backend:
    label: str  # "SQLite store, file sink"
    store_url: str
    keys: tuple[str, str]  # figure 9's keys for acks and completions
    empty: tuple[str, str]  # the same figures with an empty store
    pools: tuple[int, ...]
    built: dict[str, Any]


def _against_empty(ctx: Context, figure: Figure, empty_key: str, built: dict[str, Any]) -> Figure:
    name = f"{figure.name}, {ctx.plan.settled_jobs:,} settled jobs in the store"
    empty = ctx.figures.get(empty_key)
    return relative(figure, name, empty, f"figure {empty_key} (empty store)", TARGET, store=built)


def _measure(ctx: Context, backend: Backend) -> list[Figure]:
    """Figures 3 and 1 on the store holding settled jobs; every job a run adds is taken out again."""
    url, plan = backend.store_url, ctx.plan
    settled.remove_jobs(url, None)  # what an interrupted run left in progress
    added: list[str] = []
    name = f"settled-{backend.keys[0]}"

    def seeded(count: int) -> list[SeededJob]:
        if added:
            settled.remove_jobs(url, added)
            added.clear()
        jobs = make_jobs(count)
        added.extend(job.job_id for job in jobs)
        asyncio.run(insert_jobs(url, jobs))
        return jobs

    def start(pool: int) -> tuple[Receiver, list[SeededJob]]:
        jobs = seeded(pool)
        return ctx.receiver(name, url), jobs

    ack_key, done_key = backend.keys
    try:
        jobs = seeded(plan.completions)
        done = completions.completions(ctx, key=done_key, store_url=url, jobs=jobs, label=backend.label)
        measured = ack.receiver_closed_loop(ctx, name, start, backend.pools)
    finally:
        if added:
            settled.remove_jobs(url, added)
    label = f"webhooks acked/s, {backend.label}"
    acks = ack.ack_figure(ack_key, label, measured, ack.bare_rate(ctx), ctx.bare_ack_detail)
    return [
        _against_empty(ctx, figure, empty, backend.built)
        for figure, empty in zip((acks, done), backend.empty, strict=True)
    ]


def _ready(ctx: Context, what: str, built_s: float) -> dict[str, Any]:
    ctx.progress("9 settled", f"{what} ready ({f'built in {built_s:.0f}s' if built_s else 'cached'})")
    return {"settled_jobs": ctx.plan.settled_jobs, "build_s": round(built_s, 1), "cached": not built_s}


def settled_store(ctx: Context) -> list[Figure]:
    plan = ctx.plan
    count = plan.settled_jobs
    ctx.progress("9 settled", f"building or reusing the stores with {count:,} settled jobs")
    sqlite = Backend(
        "SQLite store, file sink",
        f"sqlite:///{settled.sqlite_path(count)}",
        ("9a", "9b"),
        ("1", "3"),
        plan.ack_pools,
        _ready(ctx, f"SQLite {settled.sqlite_path(count)}", settled.build_sqlite(count)),
    )
    figures = _measure(ctx, sqlite)
    problem = asyncio.run(postgres.reachable())
    if problem is not None:
        skipped = f"skipped: PostgreSQL unreachable ({problem})"
        return [
            *figures,
            Figure("9c", "figure 8a with settled jobs in the store", None, "", note=skipped),
            Figure("9d", "figure 8b with settled jobs in the store", None, "", note=skipped),
        ]
    schema = settled.postgres_schema(count)
    pg = Backend(
        "PostgreSQL store, file sink",
        f"{postgres.DSN}?schema={schema}",
        ("9c", "9d"),
        ("8a", "8b"),
        plan.ack_pools_postgres,
        _ready(ctx, f"PostgreSQL schema {schema}", asyncio.run(settled.build_postgres(postgres.DSN, count))),
    )
    return [*figures, *_measure(ctx, pg)]


def cpu_per_edit(ctx: Context) -> list[Figure]:
    """Figure 10, from what figures 3 and 5 measured."""
    done, upstream = ctx.figures.get("3"), ctx.figures.get("5a")
    if done is None:
        return [Figure("10", "receiver CPU per completed 1 MiB edit", None, "", note="needs phase 3")]
    receiver = done.detail["receiver"]
    polling = upstream.detail["runs"]["poll 0.5s"]["cpu_ms_per_edit"] if upstream is not None else None
    download = done.detail["baseline"].get("cpu_ms_per_download")
    return [
        Figure(
            "10",
            "CPU per completed 1 MiB edit, receiver processes (webhook -> stored -> event)",
            receiver["cpu_ms_per_edit"],
            "ms",
            polling,
            "0.5 s polling loop per edit, no download" if upstream is not None else "figure 5 not run",
            ratio(receiver["cpu_ms_per_edit"], polling),
            "receiver / polling",
            "reported",
            None,
            note=f"plain httpx: {download:.2f} ms CPU per 1 MiB download" if download is not None else "",
            detail={"receiver_cpu_s": receiver["receiver_cpu_s"], "httpx_cpu_ms_per_download": download},
        )
    ]
