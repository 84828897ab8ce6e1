"""A whole run: set up the temp directory, the samples and the result server; run each
scenario with a progress line; print the table and write the JSON. Every process is killed on the
way out, whether the run ends normally, by an error, by Ctrl-C or by SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from receiver.logs import configure_logging
from tests.bench import ack, completions, postgres, redis_sink, s3, store_size, streams, upstream
from tests.bench.context import Context
from tests.bench.launch import start_result_server
from tests.bench.plan import Plan
from tests.bench.proc_info import busy_cores, machine_info
from tests.bench.procs import Processes
from tests.bench.report import Figure, table, write_json
from tests.bench.samples import write_samples

Scenario = Callable[[Context], list[Figure]]


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def scenarios() -> list[tuple[str, Scenario]]:
    """The phases in order; `--only` picks them by the first words of their names (see `chosen`)."""
    return [
        ("0 generator ceiling", lambda ctx: [ack.generator_ceiling(ctx)]),
        ("1 ack throughput", ack.ack_throughputs),
        ("2 ack latency", lambda ctx: [ack.ack_latency(ctx)]),
        ("3 completions", lambda ctx: [completions.completions(ctx)]),
        ("1s ack throughput, S3 blobs", lambda ctx: [s3.ack_throughput_s3(ctx)]),
        ("3s completions, S3 blobs", lambda ctx: [s3.completions_s3(ctx)]),
        ("4 webhook to event", completions.end_to_end),
        ("5 upstream (figures 5 and 6)", upstream.upstream),
        ("7 peak memory", lambda ctx: [completions.peak_memory(ctx)]),
        ("7s peak memory, S3 blobs", lambda ctx: [s3.peak_memory_s3(ctx)]),
        ("8 postgres", postgres.postgres),
        ("8 redis sink", redis_sink.redis_sink),
        ("9 settled store", store_size.settled_store),
        ("10 cpu per edit", store_size.cpu_per_edit),
        ("11 idle streams", streams.idle_streams),
    ]


def chosen(name: str, keys: set[str]) -> bool:
    """Whether `--only` picks phase `name`: a key is its first words, whole ("1" is phase 1 alone, not
    1s, 10 or 11; "8" both phases 8; "8 redis" the Redis one)."""
    return any(name == key or name.startswith(f"{key} ") for key in keys)


def run(
    plan: Plan, out: Path, *, keep: bool = False, only: set[str] | None = None, profile: Path | None = None
) -> int:
    signal.signal(signal.SIGTERM, _terminated)
    # Ctrl-C raises KeyboardInterrupt even where SIGINT was inherited as ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    configure_logging("warning", json=False)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="kontext-bench-"))
    figures: list[Figure] = []
    failed: list[str] = []
    ctx: Context | None = None
    try:
        with Processes(workdir / "logs") as procs:
            ctx = _setup(plan, workdir, procs, started)
            ctx.profile = profile.resolve() if profile is not None else None
            for name, scenario in scenarios():
                if only and not chosen(name, only):
                    continue
                ctx.progress(name, "starting")
                try:
                    measured = scenario(ctx)
                    figures.extend(measured)
                    ctx.figures.update((figure.key, figure) for figure in measured)
                except Exception as exc:
                    failed.append(f"{name}: {exc}")
                    ctx.progress(name, f"FAILED: {exc}")
                    traceback.print_exc()
    except (KeyboardInterrupt, SystemExit):
        print("\ninterrupted: every process of the run has been stopped", file=sys.stderr)
        raise
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    meta: dict[str, Any] = {
        "machine": machine_info() | {"busy_cores_before_run": ctx.busy_before if ctx else None},
        "plan": {k: v for k, v in vars(plan).items()},
        "elapsed_s": round(time.monotonic() - started, 1),
        "failed_scenarios": failed,
        "workdir": str(workdir) if keep else None,
    }
    write_json(out, figures, meta)
    print()
    print(table(figures))
    print(f"\n{len(figures)} figures in {meta['elapsed_s']:.0f}s; written to {out}")
    if failed:
        print("scenarios that failed:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def _setup(plan: Plan, workdir: Path, procs: Processes, started: float) -> Context:
    samples_dir = workdir / "samples"
    samples = write_samples(samples_dir)
    results = start_result_server(procs, samples_dir)
    busy = busy_cores()
    if busy > 0.25:
        print(
            f"warning: {busy:.2f} of {os.cpu_count()} cores are busy before the run starts; other work on "
            "this machine will make the figures noisy (see machine_cpu_cores in the results)",
            file=sys.stderr,
        )
    ctx = Context(plan, workdir, procs, results, samples, started, busy_before=busy)
    sizes = ", ".join(f"{s.name} {s.bytes:,} B" for s in samples.values())
    ctx.progress("setup", f"samples ({sizes}) served at {results.url}")
    return ctx
