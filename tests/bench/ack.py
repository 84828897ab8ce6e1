"""Figures 1 and 2: how fast webhooks are acknowledged, receiver against the bare Starlette endpoint.

Every webhook to the receiver goes to a distinct job (a 2xx means its new state is committed) and
announces the tiny sample, so the downloads the receiver starts in the background are light. The
bare endpoint does not look at the job, so its runs may reuse targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from receiver.processes.cores import usable_cores
from tests.bench.context import Context
from tests.bench.drive import Load
from tests.bench.launch import Receiver, Server, server_stack, start_bare, start_canned
from tests.bench.profile import render, start_profile, summarise
from tests.bench.report import Figure, ratio
from tests.bench.samples import TINY
from tests.bench.seed import SeededJob, make_jobs
from tests.bench.stats import percentile, summary_ms
from tests.bench.workload import Spec, Target

BARE_TARGETS = 10_000

StartReceiver = Callable[[int], tuple[Receiver, list[SeededJob]]]  # pool size -> receiver and its jobs


@dataclass(frozen=True)
class Throughput:
    rate: float
    detail: dict[str, Any]

    @property
    def failures(self) -> int:
        return int(self.detail["failures"])


def closed_loop(
    ctx: Context,
    name: str,
    server: Server,
    targets: list[Target],
    warmup_s: float,
    window_s: float,
    *,
    cycle: bool = False,
) -> Throughput:
    """Closed loop; `cycle` reuses the targets, for servers that do not care which job a webhook names."""
    spec = Spec(
        "127.0.0.1",
        server.port,
        targets,
        mode="closed",
        concurrency=ctx.plan.ack_concurrency,
        warmup_s=warmup_s,
        duration_s=window_s,
        cycle=cycle,
    )
    load = ctx.load(name, spec, server)
    detail = _detail(load) | {"server": server_stack(server)}
    cores = (
        f"cores busy: server {load.server_cpu:.2f}, generator {load.generator_cpu:.2f}, "
        f"machine {load.machine_cpu:.2f}"
    )
    ctx.progress(name, f"{load.rate:,.0f}/s ({cores})")
    return Throughput(load.rate, detail)


def receiver_closed_loop(
    ctx: Context, name: str, start: StartReceiver, pools: tuple[int, ...], profile: Path | None = None
) -> Throughput:
    """The receiver's closed-loop rate with a pool of distinct jobs; a larger pool if it ran out."""
    plan = ctx.plan
    measured = Throughput(0.0, {})
    for pool in pools:
        receiver, jobs = start(pool)
        spy = None
        if profile is not None:
            spy = start_profile(
                ctx.procs, receiver.proc.pid, plan.ack_warmup_s + plan.ack_window_s + 1, profile
            )
            if spy is None:
                ctx.progress(name, "--profile: py-spy is not installed (pip install py-spy); not profiled")
        targets = ctx.targets(TINY, jobs)
        measured = closed_loop(ctx, name, receiver, targets, plan.ack_warmup_s, plan.ack_window_s)
        measured.detail.update(job_pool=pool, events_in_sink_at_end=_sink_lines(receiver))
        if spy is not None and profile is not None:
            spy.wait(60)
            spots = summarise(profile)
            print(render(spots), flush=True)
            measured.detail["profile"] = {"collapsed_stacks": str(profile)} | asdict(spots)
        ctx.procs.stop(receiver.proc)
        if not measured.detail["ran_out_of_jobs"]:
            break
        ctx.progress(name, f"used all {pool:,} jobs before the window ended; again with more")
    return measured


def _detail(load: Load) -> dict[str, Any]:
    r = load.result
    return {
        "responses": r.completed,
        "statuses": r.statuses,
        "failures": load.failures,
        "errors": r.errors[:5],
        "window_s": round(r.window_s, 3),
        "window_responses": r.window_completed,
        "ran_out_of_jobs": r.exhausted,
        "latency_ms": summary_ms(r.latencies_s),
        "server_cpu_cores": load.server_cpu,
        "generator_cpu_cores": load.generator_cpu,
        "machine_cpu_cores": load.machine_cpu,
        "connections": r.connections,
        "generator_priority_raised": r.priority_raised,
    }


def notes(measured: Throughput, *extra: str) -> str:
    found = [
        f"{measured.failures} failed responses" if measured.failures else "",
        "ran out of jobs in the window (raise Plan.ack_pools)"
        if measured.detail.get("ran_out_of_jobs")
        else "",
        "profiled with py-spy while measured" if "profile" in measured.detail else "",
        *extra,
    ]
    return "; ".join(note for note in found if note)


def _sink_lines(receiver: Receiver) -> int:
    """Events published so far: how far the background work had got when the load stopped."""
    return receiver.sink.read_bytes().count(b"\n")


def _any_job(ctx: Context, name: str, server: Server, warmup_s: float | None = None) -> Throughput:
    """The closed-loop rate of a server that does not care which job a webhook names; then stop it."""
    plan = ctx.plan
    targets = ctx.targets(TINY, make_jobs(BARE_TARGETS))
    warmup, window = (plan.ack_warmup_s, plan.ack_window_s) if warmup_s is None else (warmup_s, 3.0)
    measured = closed_loop(ctx, name, server, targets, warmup, window, cycle=True)
    ctx.procs.stop(server.proc)
    return measured


def bare_processes(ctx: Context, receiver: Figure | None) -> Figure:
    """Figure 1b: the bare endpoint with as many processes as `serve` runs (uvicorn --workers), beside
    the receiver's figure 1."""
    processes = usable_cores()
    measured = _any_job(ctx, "ack-bare-processes", start_bare(ctx.procs, processes))
    return Figure(
        "1b",
        f"bare Starlette, {processes} processes (as many as serve runs), C={ctx.plan.ack_concurrency}",
        measured.rate,
        "/s",
        receiver.value if receiver is not None else None,
        "receiver, figure 1",
        ratio(receiver.value if receiver is not None else None, measured.rate),
        "receiver / bare",
        note="informative",
        detail=measured.detail | {"processes": processes},
    )


def bare_rate(ctx: Context) -> float:
    """The bare endpoint's closed-loop rate, measured once per run (figures 1 and 8 use it)."""
    if ctx.bare_ack_rate is None:
        measured = _any_job(ctx, "ack-bare", start_bare(ctx.procs))
        ctx.bare_ack_rate, ctx.bare_ack_detail = measured.rate, measured.detail
    return ctx.bare_ack_rate


def ack_figure(
    key: str, label: str, measured: Throughput, baseline: float, baseline_detail: dict[str, Any]
) -> Figure:
    share = ratio(measured.rate, baseline)
    same_stack = measured.detail["server"] == baseline_detail.get("server")
    return Figure(
        key,
        label,
        measured.rate,
        "/s",
        baseline,
        "bare Starlette",
        share,
        "receiver / baseline",
        ">= 30% of baseline",
        share is not None and share >= 0.3 and measured.failures == 0,
        note=notes(measured, "" if same_stack else "receiver and baseline ran different uvicorn loop/parser"),
        detail={"receiver": measured.detail, "baseline": baseline_detail},
    )


def ack_throughputs(ctx: Context) -> list[Figure]:
    """Figures 1 and 1b."""
    receiver = ack_throughput(ctx)
    return [receiver, bare_processes(ctx, receiver)]


def ack_throughput(ctx: Context) -> Figure:
    """Figure 1."""
    plan = ctx.plan
    measured = receiver_closed_loop(
        ctx,
        "ack-receiver",
        lambda pool: ctx.seeded_receiver("ack-receiver", pool),
        plan.ack_pools,
        ctx.profile,
    )
    baseline = bare_rate(ctx)
    label = f"webhooks acked/s, SQLite store, file sink, closed loop C={plan.ack_concurrency}"
    return ack_figure("1", label, measured, baseline, ctx.bare_ack_detail)


def open_loop(ctx: Context, name: str, server: Server, targets: list[Target]) -> dict[str, Any]:
    plan = ctx.plan
    spec = Spec(
        "127.0.0.1",
        server.port,
        targets,
        mode="open",
        concurrency=16,
        rate=plan.latency_rate,
        warmup_s=plan.latency_warmup_s,
    )
    load = ctx.load(name, spec, server)
    detail = _detail(load) | {
        "send_lag_ms": summary_ms(load.result.send_lag_s),
        "p99_ms": percentile(load.result.latencies_s, 99) * 1e3,
        "server": server_stack(server),
    }
    latency = detail["latency_ms"]
    ctx.progress(
        name, f"p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms at {plan.latency_rate:.0f}/s"
    )
    return detail


def ack_latency(ctx: Context) -> Figure:
    """Figure 2: p99 acknowledgement latency at a fixed rate, from each webhook's scheduled send time."""
    plan = ctx.plan
    receiver, jobs = ctx.seeded_receiver("latency-receiver", plan.latency_jobs)
    targets = ctx.targets(TINY, jobs)
    measured = open_loop(ctx, "latency-receiver", receiver, targets)
    measured["events_in_sink_at_end"] = _sink_lines(receiver)
    ctx.procs.stop(receiver.proc)
    bare = start_bare(ctx.procs)
    baseline = open_loop(ctx, "latency-bare", bare, targets)
    ctx.procs.stop(bare.proc)
    p99, base_p99 = measured["p99_ms"], baseline["p99_ms"]
    failures = measured["failures"]
    return Figure(
        "2",
        f"p99 ack latency at {plan.latency_rate:.0f}/s, open loop",
        p99,
        "ms",
        base_p99,
        "bare Starlette",
        ratio(p99, base_p99),
        "receiver / baseline",
        "<= 10 ms",
        p99 <= 10.0 and failures == 0,
        note=f"{failures} failed responses" if failures else "",
        detail={"receiver": measured, "baseline": baseline},
    )


def generator_ceiling(ctx: Context) -> Figure:
    """The load generator against a server that does nothing: its own limit, for scale."""
    measured = _any_job(ctx, "generator-ceiling", start_canned(ctx.procs), warmup_s=1.0)
    return Figure(
        "0",
        f"load generator ceiling (canned-response server), C={ctx.plan.ack_concurrency}",
        measured.rate,
        "/s",
        note="informative: how far above the servers' rates the generator can go",
        detail=measured.detail,
    )
