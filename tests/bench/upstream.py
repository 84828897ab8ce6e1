"""Figures 5 and 6: from "result ready" to "the backend knows", and upstream calls per edit, for the
receiver and for polling loops at 0.5 s and 1 s, against the simulator with the same seeded task
durations in each run (a fresh simulator per run).

"Ready" is the task's `ready_at` from the simulator's `/_sim/tasks/{id}` (the `end_time` its result
reports). "Knows" is, for the receiver, the moment the edit's event line appears in the sink (the
image is stored by then); for a polling loop, the moment the first poll that sees `Ready` is answered.
Upstream calls are the simulator's own count of submits (refused ones too) and `get_result` calls.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any

import httpx

from tests.bench.context import Context
from tests.bench.launch import API_TOKEN, SIM_KEY, Server, start_simulator
from tests.bench.polling import poll_all
from tests.bench.report import Figure, ratio
from tests.bench.samples import TINY
from tests.bench.stats import mean, percentile, summary_ms
from tests.bench.watcher import SinkWatcher

SEED = 20261121
UPLOADS_AT_ONCE = 8  # the default RECEIVER_MAX_UPLOADS


@dataclass(frozen=True)
class ModeRun:
    mode: str
    delays_s: list[float]
    calls: int
    edits: int
    detail: dict[str, Any]

    @property
    def calls_per_edit(self) -> float:
        return self.calls / self.edits


def prompts(ctx: Context) -> list[str]:
    """The edits of each run; the simulator fixes each one's duration from its prompt and the seed."""
    return [f"bench edit {i:03d}" for i in range(ctx.plan.edits)]


def _sim_facts(sim: Server, task_ids: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        ready = {
            task_id: float(client.get(f"/_sim/tasks/{task_id}").json()["ready_at"]) for task_id in task_ids
        }
        stats: dict[str, int] = client.get("/_sim/stats").json()
    return ready, stats


def _calls(stats: dict[str, int]) -> int:
    return stats["submits"] + stats["rejected"] + stats["get_result"]


def _simulator(ctx: Context, name: str) -> Server:
    return start_simulator(ctx.procs, name, (ctx.plan.edit_min_s, ctx.plan.edit_max_s), SEED)


def via_receiver(ctx: Context, edits: list[str]) -> ModeRun:
    sim = _simulator(ctx, "sim-receiver")
    receiver = ctx.receiver(
        "upstream-receiver", bfl_url=sim.url, RECEIVER_MAX_ACTIVE=str(ctx.plan.max_active)
    )
    image = base64.b64encode((ctx.workdir / "samples" / TINY).read_bytes()).decode()

    async def submit_and_watch() -> dict[str, Any]:
        with SinkWatcher(receiver.sink, clock=time.time) as watcher:
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            # As many uploads at once as the receiver takes (RECEIVER_MAX_UPLOADS): a ninth would be a 503.
            limits = httpx.Limits(max_connections=UPLOADS_AT_ONCE)
            async with httpx.AsyncClient(
                base_url=receiver.url, headers=headers, limits=limits, timeout=30
            ) as client:
                answers = await asyncio.gather(
                    *(client.post("/v1/edits", json={"prompt": p, "image": image}) for p in edits)
                )
            for answer in answers:
                if answer.status_code != 202:
                    raise RuntimeError(f"POST /v1/edits answered {answer.status_code}: {answer.text}")
            job_ids = {answer.json()["id"] for answer in answers}
            if not await watcher.wait_for(job_ids, 120.0):
                raise RuntimeError(f"{len(job_ids - watcher.seen.keys())} edits never reached the sink")
            return {job_id: watcher.seen[job_id] for job_id in job_ids}

    seen = asyncio.run(submit_and_watch())
    task_of = {job_id: s.event["data"]["bfl_task_id"] for job_id, s in seen.items()}
    ready, stats = _sim_facts(sim, list(task_of.values()))
    ctx.procs.stop(receiver.proc)
    ctx.procs.stop(sim.proc)
    delays = [s.at - ready[task_of[job_id]] for job_id, s in seen.items()]
    outcomes = sorted({f"{s.event['data']['outcome']} via {s.event['data']['via']}" for s in seen.values()})
    return ModeRun("receiver", delays, _calls(stats), len(seen), {"sim_stats": stats, "outcomes": outcomes})


def via_polling(ctx: Context, edits: list[str], interval: float) -> ModeRun:
    sim = _simulator(ctx, f"sim-poll-{interval:g}s")
    image = (ctx.workdir / "samples" / TINY).read_bytes()
    cpu_before = time.process_time()  # the polling loops run in this process, alone
    polled = asyncio.run(poll_all(sim.url, SIM_KEY, edits, image, interval, ctx.plan.max_active))
    cpu_s = time.process_time() - cpu_before
    ready, stats = _sim_facts(sim, [p.task_id for p in polled])
    ctx.procs.stop(sim.proc)
    delays = [p.known_at - ready[p.task_id] for p in polled]
    statuses = sorted({p.status for p in polled})
    return ModeRun(
        f"poll {interval:g}s",
        delays,
        _calls(stats),
        len(polled),
        {
            "sim_stats": stats,
            "statuses": statuses,
            "cpu_s": cpu_s,
            "cpu_ms_per_edit": cpu_s * 1e3 / len(polled),
        },
    )


def _summary(run: ModeRun) -> dict[str, Any]:
    return run.detail | {
        "delay_ms": summary_ms(run.delays_s),
        "edits": run.edits,
        "upstream_calls": run.calls,
        "calls_per_edit": run.calls_per_edit,
    }


def upstream(ctx: Context) -> list[Figure]:
    edits = prompts(ctx)
    runs = [via_receiver(ctx, edits), via_polling(ctx, edits, 0.5), via_polling(ctx, edits, 1.0)]
    for run in runs:
        ctx.progress(
            f"upstream {run.mode}",
            f"ready->known mean {mean(run.delays_s) * 1e3:.0f} ms, "
            f"p50 {percentile(run.delays_s, 50) * 1e3:.0f} ms, {run.calls_per_edit:.2f} upstream calls/edit",
        )
    receiver, half, one = runs
    mean_ms = {run.mode: mean(run.delays_s) * 1e3 for run in runs}
    p50_ms = {run.mode: percentile(run.delays_s, 50) * 1e3 for run in runs}
    common = {
        "edits": ctx.plan.edits,
        "task_durations_s": [ctx.plan.edit_min_s, ctx.plan.edit_max_s],
        "seed": SEED,
        "runs": {run.mode: _summary(run) for run in runs},
    }
    faster_mean = ratio(mean_ms[half.mode], mean_ms[receiver.mode])
    faster_p50 = ratio(p50_ms[half.mode], p50_ms[receiver.mode])
    figures = [
        Figure(
            "5a",
            "ready -> backend knows, receiver, mean",
            mean_ms[receiver.mode],
            "ms",
            mean_ms[half.mode],
            "0.5 s polling",
            faster_mean,
            "polling / receiver",
            ">= 15x lower than 0.5 s polling",
            faster_mean is not None and faster_mean >= 15,
            detail=common,
        ),
        Figure(
            "5b",
            "ready -> backend knows, receiver, p50",
            p50_ms[receiver.mode],
            "ms",
            p50_ms[half.mode],
            "0.5 s polling",
            faster_p50,
            "polling / receiver",
            ">= 15x lower than 0.5 s polling",
            faster_p50 is not None and faster_p50 >= 15,
        ),
        Figure(
            "5c",
            "ready -> backend knows, 0.5 s polling, mean",
            mean_ms[half.mode],
            "ms",
            note="informative",
            detail={"p50_ms": p50_ms[half.mode]},
        ),
        Figure(
            "5d",
            "ready -> backend knows, 1 s polling, mean",
            mean_ms[one.mode],
            "ms",
            note="informative",
            detail={"p50_ms": p50_ms[one.mode]},
        ),
        Figure(
            "6a",
            "upstream calls per edit, receiver (webhooks arrive)",
            receiver.calls_per_edit,
            "",
            half.calls_per_edit,
            "0.5 s polling",
            ratio(receiver.calls_per_edit, half.calls_per_edit),
            "receiver / polling",
            "1",
            receiver.calls_per_edit <= 1.0,
        ),
        Figure("6b", "upstream calls per edit, 0.5 s polling", half.calls_per_edit, "", note="informative"),
        Figure("6c", "upstream calls per edit, 1 s polling", one.calls_per_edit, "", note="informative"),
    ]
    return figures
