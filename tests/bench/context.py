"""What every scenario of a run shares: the plan, the temp directory, the processes, the result
server, and how a receiver is started on a store holding just the submitted jobs its phase uses
(the receiver's work per webhook may depend on how many jobs are waiting; BFL lets an account have
24 active, so a store full of jobs no webhook will come for would not be a fair picture)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.drive import DownloadBaseline, Load, run_load
from tests.bench.launch import NO_UPSTREAM, Receiver, Server, start_receiver
from tests.bench.plan import Plan
from tests.bench.procs import Processes
from tests.bench.report import Figure
from tests.bench.samples import Sample
from tests.bench.seed import SeededJob, insert_jobs, make_jobs
from tests.bench.workload import Spec, Target


@dataclass
class Context:
    plan: Plan
    workdir: Path
    procs: Processes
    results: Server
    samples: dict[str, Sample]
    started: float = field(default_factory=time.monotonic)
    busy_before: float = 0.0  # cores busy on the machine just before the run (other work)
    # Baselines measured by one scenario and used by another (figure 8 reuses those of 1 and 3).
    bare_ack_rate: float | None = None
    bare_ack_detail: dict[str, Any] = field(default_factory=dict)
    download: DownloadBaseline | None = None
    figures: dict[str, Figure] = field(default_factory=dict)  # what earlier scenarios measured, by key
    profile: Path | None = None  # where py-spy writes the receiver's stacks during figure 1, if asked
    s3_endpoint: str | None = None  # moto's S3 server, started by the first S3 figure
    _runs: int = 0

    def progress(self, phase: str, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f}s] {phase}: {message}", flush=True)

    def sample_url(self, sample: str, job_id: str) -> str:
        # Shaped like BFL's signed delivery URLs; the result server ignores the query.
        return f"{self.results.url}/samples/{sample}?se=2099-01-01T00%3A00%3A00Z&sig={job_id}"

    def targets(self, sample: str, jobs: list[SeededJob]) -> list[Target]:
        return [Target(j.job_id, j.secret, self.sample_url(sample, j.job_id), j.task_id) for j in jobs]

    def new_dir(self, name: str) -> Path:
        self._runs += 1
        path = self.workdir / f"{self._runs:02d}-{name}"
        path.mkdir(parents=True)
        return path

    def receiver(
        self,
        name: str,
        store_url: str | None = None,
        *,
        bfl_url: str = NO_UPSTREAM,
        **settings: str,
    ) -> Receiver:
        """A receiver with an empty sink, on a fresh SQLite store in its own directory (or the store at
        `store_url`)."""
        data = self.new_dir(name)
        (data / "events.jsonl").touch()
        return start_receiver(self.procs, name, data, store_url=store_url, bfl_url=bfl_url, **settings)

    def seeded_receiver(self, name: str, count: int, **settings: str) -> tuple[Receiver, list[SeededJob]]:
        """A receiver on a fresh SQLite store holding `count` new submitted jobs (written first)."""
        data = self.new_dir(name)
        jobs = make_jobs(count)
        asyncio.run(insert_jobs(f"sqlite:///{data / 'receiver.db'}", jobs))
        (data / "events.jsonl").touch()
        return start_receiver(self.procs, name, data, **settings), jobs

    def load(self, name: str, spec: Spec, server: Server, timeout: float = 180.0) -> Load:
        return run_load(self.procs, self.workdir, name, spec, server.proc.pid, timeout)
