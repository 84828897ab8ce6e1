"""Running the load generator as a process of its own and collecting what it measured, with the CPU
the server under load used meanwhile (to show which side was the bottleneck)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.launch import ROOT
from tests.bench.procs import PYTHON, Processes, python_env
from tests.bench.workload import Result, Spec


@dataclass(frozen=True)
class Load:
    result: Result
    server_cpu: float  # cores the server used on average while the generator ran
    generator_cpu: float  # cores the generator used on average
    machine_cpu: float  # cores busy on the whole machine (the rest: result server, store, others)

    @property
    def rate(self) -> float:
        """Responses per second in the measured window."""
        r = self.result
        return r.window_completed / r.window_s if r.window_s > 0 else 0.0

    @property
    def failures(self) -> int:
        bad = sum(count for status, count in self.result.statuses.items() if not status.startswith("2"))
        return bad + len(self.result.errors)


@dataclass(frozen=True)
class DownloadBaseline:
    """Plain httpx downloading the 1 MiB sample: downloads per second with the receiver's download
    concurrency, and single downloads one after another (seconds each)."""

    rate: float
    sequential_s: list[float]
    detail: dict[str, Any]


def run_load(procs: Processes, workdir: Path, name: str, spec: Spec, server_pid: int, timeout: float) -> Load:
    spec_path, out_path = workdir / f"{name}.spec.json", workdir / f"{name}.result.json"
    dataclasses.replace(spec, server_pid=server_pid).dump(spec_path)
    out_path.unlink(missing_ok=True)
    args = [PYTHON, "-m", "tests.bench.loadgen", str(spec_path), str(out_path)]
    proc = procs.start(f"loadgen-{name}", args, python_env(), ROOT)
    code = proc.wait(timeout)
    procs.stop(proc)
    if code != 0 or not out_path.exists():
        raise RuntimeError(f"load generator {name} failed ({code}):\n{proc.tail()}")
    result = Result(**json.loads(out_path.read_text()))
    window = result.window_s
    server_cpu = result.window_server_cpu_s / window if window > 0 else 0.0
    generator_cpu = result.window_cpu_s / window if window > 0 else 0.0
    machine_cpu = result.window_machine_cpu_s / window if window > 0 else 0.0
    return Load(result, round(server_cpu, 2), round(generator_cpu, 2), round(machine_cpu, 2))
