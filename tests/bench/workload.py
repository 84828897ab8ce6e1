"""What the load generator is asked to do and what it reports: the webhooks (one per job), the
driver's settings, and the results, all plain dataclasses that travel as JSON between the harness and
the generator's process. The HTTP requests are built here, before any clock starts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.bench.http1 import build_request


@dataclass(frozen=True)
class Target:
    """One webhook: the job it is for, its secret, and the result URL it announces."""

    job_id: str
    secret: str
    sample_url: str
    task_id: str


@dataclass(frozen=True)
class Spec:
    host: str
    port: int
    targets: list[Target]
    mode: str = "closed"  # "closed" or "open"
    concurrency: int = 32  # closed loop: connections; open loop: connections opened up front
    duration_s: float = 0.0  # closed loop: the measured window (0: send every target once)
    warmup_s: float = 0.0  # sent but not counted, before the window (open loop: by scheduled time)
    rate: float = 0.0  # open loop: webhooks per second
    watch: str | None = None  # sink file whose events to timestamp
    watch_timeout_s: float = 120.0
    max_connections: int = 512
    cycle: bool = False  # closed loop: start over when the targets run out (servers that ignore the job)
    server_pid: int = 0  # whose CPU time to read over the measured window

    @classmethod
    def load(cls, path: Path) -> Spec:
        raw = json.loads(path.read_text())
        raw["targets"] = [Target(**t) for t in raw["targets"]]
        return cls(**raw)

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))


@dataclass
class Result:
    sent: int = 0
    completed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    window_s: float = 0.0
    window_completed: int = 0
    exhausted: bool = False  # closed loop: ran out of targets before the window ended
    latencies_s: list[float] = field(default_factory=list)  # per response, in the window (or all)
    send_lag_s: list[float] = field(default_factory=list)  # open loop: actual send - scheduled
    scheduled_s: dict[str, float] = field(default_factory=dict)  # job id -> scheduled/sent time
    events_s: dict[str, float] = field(default_factory=dict)  # job id -> time its event appeared
    all_events: bool = False
    first_send_s: float = 0.0
    last_response_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    connections: int = 0
    # CPU seconds over the measured window: the generator's, and the server's (from /proc)
    window_cpu_s: float = 0.0
    window_server_cpu_s: float = 0.0
    window_machine_cpu_s: float = 0.0  # every process on the machine, this run's included
    priority_raised: bool = False


def body_for(target: Target) -> bytes:
    body = {
        "task_id": target.task_id,
        "status": "SUCCESS",
        "result": {"sample": target.sample_url, "seed": 1},
    }
    return json.dumps(body).encode()


def build_all(spec: Spec) -> list[bytes]:
    return [
        build_request(
            spec.host,
            spec.port,
            f"/webhooks/bfl/{t.job_id}",
            {"Content-Type": "application/json", "X-Webhook-Secret": t.secret},
            body_for(t),
        )
        for t in spec.targets
    ]
