"""Figures 3, 4 and 7: from webhook to image stored and event in the sink file (3s and 7s: the same
with the images in S3, see `tests.bench.s3`).

3: N webhooks sent as fast as they are accepted; completions per second from the first send until
   the last of the N events is in the sink. Baseline: plain httpx downloading the same file N times
   with the receiver's download concurrency.
4: one webhook every 1/R s; each job's time from its scheduled send to its event line appearing.
7: 50 webhooks at once announcing 20 MiB samples; the receiver's peak RSS above its idle RSS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.bench.context import Context
from tests.bench.drive import DownloadBaseline, Load
from tests.bench.launch import ROOT, Receiver
from tests.bench.proc_info import tree_cpu_seconds, tree_memory_kib
from tests.bench.procs import PYTHON, python_env
from tests.bench.report import Figure, ratio
from tests.bench.samples import ONE_MIB, TINY, TWENTY_MIB
from tests.bench.seed import SeededJob
from tests.bench.stats import percentile, summary_ms
from tests.bench.workload import Spec, Target

WATCH_TIMEOUT_S = 120.0


def burst(ctx: Context, name: str, receiver: Receiver, targets: list[Target], concurrency: int) -> Load:
    """Send every target as fast as they are accepted and wait for all their events in the sink."""
    spec = Spec(
        "127.0.0.1",
        receiver.port,
        targets,
        mode="closed",
        concurrency=min(concurrency, len(targets)),
        watch=str(receiver.sink),
        watch_timeout_s=WATCH_TIMEOUT_S,
    )
    load = ctx.load(name, spec, receiver, timeout=WATCH_TIMEOUT_S + 60)
    if not load.result.all_events:
        missing = len(targets) - len(load.result.events_s)
        raise RuntimeError(f"{name}: {missing} of {len(targets)} events never reached the sink")
    return load


def completion_rate(load: Load) -> tuple[float, dict[str, Any]]:
    r = load.result
    elapsed = max(r.events_s.values()) - r.first_send_s
    rate = len(r.events_s) / elapsed
    detail = {
        "webhooks": r.completed,
        "statuses": r.statuses,
        "failures": load.failures,
        "acked_after_s": round(r.last_response_s - r.first_send_s, 3),
        "all_events_after_s": round(elapsed, 3),
        "server_cpu_cores_while_sending": load.server_cpu,
    }
    return rate, detail


def download_baseline(ctx: Context) -> DownloadBaseline:
    """Measured once per run (figures 3, 4 and 8 use it)."""
    if ctx.download is not None:
        return ctx.download
    count, sequential = ctx.plan.completions, 50
    out = ctx.workdir / "download-baseline.json"
    url = ctx.sample_url(ONE_MIB, "baseline")
    concurrency = ctx.plan.download_concurrency
    args = [PYTHON, "-m", "tests.bench.download_baseline", url, str(count), str(concurrency), str(sequential)]
    proc = ctx.procs.start("download-baseline", [*args, str(out)], python_env(), ROOT)
    code = proc.wait(180)
    ctx.procs.stop(proc)
    if code != 0:
        raise RuntimeError(f"download baseline failed ({code}):\n{proc.tail()}")
    raw = json.loads(out.read_text())
    detail = {k: raw[k] for k in ("bytes", "count", "concurrency", "elapsed_s", "cpu_ms_per_download")}
    detail["sequential_ms"] = summary_ms(raw["sequential_s"])
    ctx.progress("download-baseline", f"{raw['rate']:.0f} downloads/s of {raw['bytes']:,} bytes")
    ctx.download = DownloadBaseline(raw["rate"], raw["sequential_s"], detail)
    return ctx.download


def completions(
    ctx: Context,
    *,
    key: str = "3",
    store_url: str | None = None,
    jobs: list[SeededJob] | None = None,
    label: str = "SQLite store, file sink",
    name: str | None = None,
    settings: dict[str, str] | None = None,
    start: Callable[[], tuple[Receiver, list[SeededJob]]] | None = None,
) -> Figure:
    """Figure 3 (and 8b with `store_url` naming a PostgreSQL schema whose jobs are `jobs`; 3s with
    `settings` naming an S3 blob store; 8d with `start` giving a receiver with other sinks, and its jobs)."""
    plan = ctx.plan
    baseline = download_baseline(ctx)
    name = name or f"completions-{'postgres' if store_url else 'sqlite'}"
    if start is not None:
        receiver, jobs = start()
    elif store_url is not None and jobs is not None:
        receiver = ctx.receiver(name, store_url, **(settings or {}))
    else:
        receiver, jobs = ctx.seeded_receiver(name, plan.completions, **(settings or {}))
    targets = ctx.targets(ONE_MIB, jobs[: plan.completions])
    cpu_before = tree_cpu_seconds(receiver.proc.pid)
    load = burst(ctx, name, receiver, targets, plan.completions_concurrency)
    cpu_s = tree_cpu_seconds(receiver.proc.pid) - cpu_before
    ctx.procs.stop(receiver.proc)
    rate, detail = completion_rate(load)
    detail |= {"receiver_cpu_s": round(cpu_s, 3), "cpu_ms_per_edit": cpu_s * 1e3 / len(targets)}
    ctx.progress(name, f"{rate:.0f} completions/s ({len(targets)} x 1 MiB)")
    share = ratio(rate, baseline.rate)
    return Figure(
        key,
        f"completions/s, 1 MiB samples, {label}",
        rate,
        "/s",
        baseline.rate,
        f"httpx, {plan.download_concurrency} at once",
        share,
        "receiver / baseline",
        ">= 70% of baseline",
        share is not None and share >= 0.7 and detail["failures"] == 0,
        detail={"receiver": detail, "baseline": baseline.detail},
    )


def end_to_end(ctx: Context) -> list[Figure]:
    """Figure 4: webhook scheduled -> event line in the sink, open loop, 1 MiB samples."""
    plan = ctx.plan
    baseline = download_baseline(ctx)
    receiver, jobs = ctx.seeded_receiver("e2e", plan.e2e_jobs)
    targets = ctx.targets(ONE_MIB, jobs)
    spec = Spec(
        "127.0.0.1",
        receiver.port,
        targets,
        mode="open",
        concurrency=4,
        rate=plan.e2e_rate,
        warmup_s=plan.e2e_warmup_s,
        watch=str(receiver.sink),
        watch_timeout_s=WATCH_TIMEOUT_S,
    )
    load = ctx.load("e2e", spec, receiver, timeout=WATCH_TIMEOUT_S + 60)
    ctx.procs.stop(receiver.proc)
    r = load.result
    counted = [t.job_id for t in targets[round(plan.e2e_rate * plan.e2e_warmup_s) :]]
    delays = [r.events_s[job] - r.scheduled_s[job] for job in counted if job in r.events_s]
    missing = len(counted) - len(delays)
    p50, p99 = percentile(delays, 50) * 1e3, percentile(delays, 99) * 1e3
    floor = summary_ms(baseline.sequential_s)
    ctx.progress("e2e", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms at {plan.e2e_rate:.0f}/s ({missing} missing)")
    detail = {
        "webhook_to_event_ms": summary_ms(delays),
        "ack_latency_ms": summary_ms(r.latencies_s),
        "missing_events": missing,
        "statuses": r.statuses,
        "send_lag_ms": summary_ms(r.send_lag_s),
        "download_only_ms": floor,
    }
    note = f"{missing} events missing" if missing else ""
    return [
        Figure(
            "4a",
            f"p50 webhook -> event in sink, 1 MiB, {plan.e2e_rate:.0f}/s",
            p50,
            "ms",
            floor["p50"],
            "one httpx download",
            ratio(p50, floor["p50"]),
            "receiver / download alone",
            "<= 15 ms",
            p50 <= 15.0 and not missing,
            note=note,
            detail=detail,
        ),
        Figure(
            "4b",
            f"p99 webhook -> event in sink, 1 MiB, {plan.e2e_rate:.0f}/s",
            p99,
            "ms",
            floor["p99"],
            "one httpx download",
            ratio(p99, floor["p99"]),
            "receiver / download alone",
            "<= 60 ms",
            p99 <= 60.0 and not missing,
            note=note,
        ),
    ]


def peak_memory(
    ctx: Context,
    *,
    key: str = "7",
    label: str = "",
    name: str = "memory",
    settings: dict[str, str] | None = None,
) -> Figure:
    """Figure 7: peak RSS (VmHWM) with 50 x 20 MiB downloads in flight, over the idle receiver's RSS
    (7s with `settings` naming an S3 blob store)."""
    plan = ctx.plan
    receiver, jobs = ctx.seeded_receiver(
        name,
        plan.big_samples + 3,
        RECEIVER_DOWNLOAD_CONCURRENCY=str(plan.big_samples),
        RECEIVER_MAX_SAMPLE_BYTES=str(64 * 1024 * 1024),
        **(settings or {}),
    )
    warm, big = jobs[:3], jobs[3:]
    # Warm-up: one of each sample, so every code path (and library) a download uses has run.
    for job, sample_name in zip(warm, (TINY, ONE_MIB, TWENTY_MIB), strict=True):
        burst(ctx, f"{name}-warmup", receiver, ctx.targets(sample_name, [job]), 1)
    time.sleep(1.0)
    idle_kib = tree_memory_kib(receiver.proc.pid, "VmRSS")
    hwm_before_kib = tree_memory_kib(receiver.proc.pid, "VmHWM")
    load = burst(ctx, name, receiver, ctx.targets(TWENTY_MIB, big), len(big))
    peak_kib = tree_memory_kib(receiver.proc.pid, "VmHWM")
    after_kib = tree_memory_kib(receiver.proc.pid, "VmRSS")
    ctx.procs.stop(receiver.proc)
    above_mb = (peak_kib - idle_kib) * 1024 / 1e6
    sample = ctx.samples[TWENTY_MIB]
    ctx.progress(name, f"idle {idle_kib / 1024:.0f} MiB, peak {peak_kib / 1024:.0f} MiB")
    return Figure(
        key,
        f"peak RSS above idle, {len(big)} x {sample.bytes / 2**20:.0f} MiB PNG at once{label}",
        above_mb,
        "MB",
        idle_kib * 1024 / 1e6,
        "idle RSS",
        ratio(peak_kib, idle_kib),
        "peak / idle",
        "<= 100 MB above idle",
        above_mb <= 100.0 and load.failures == 0,
        detail={
            "idle_rss_kib": idle_kib,
            "hwm_before_burst_kib": hwm_before_kib,
            "peak_hwm_kib": peak_kib,
            "rss_after_kib": after_kib,
            "sample_bytes": sample.bytes,
            "sample_pixels": sample.width * sample.height,
            "download_concurrency": plan.big_samples,
            "all_events_after_s": round(max(load.result.events_s.values()) - load.result.first_send_s, 3),
        },
    )
