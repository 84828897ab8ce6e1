"""How much of everything a run does: the full run (about 4 minutes) and `--quick` (about 1)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    quick: bool
    # 1, 8: webhooks acknowledged per second, closed loop
    ack_concurrency: int = 32
    ack_warmup_s: float = 2.0
    ack_window_s: float = 8.0
    # Distinct jobs for one closed-loop run: the first pool, then a larger one if the receiver used
    # them all before the window ended (the run is then repeated).
    ack_pools: tuple[int, ...] = (40_000, 120_000)
    ack_pools_postgres: tuple[int, ...] = (15_000, 50_000)
    # 2: acknowledgement latency, open loop
    latency_rate: float = 500.0
    latency_warmup_s: float = 1.0
    latency_window_s: float = 10.0
    # 3, 8: completions per second with 1 MiB samples
    completions: int = 300
    completions_concurrency: int = 32  # webhook connections; downloads are the receiver's own business
    download_concurrency: int = 16  # RECEIVER_DOWNLOAD_CONCURRENCY's default, and the baseline's
    # 4: webhook to event, open loop
    e2e_rate: float = 50.0
    e2e_warmup_s: float = 1.0
    e2e_window_s: float = 10.0
    # 5, 6: result ready -> backend knows, through the simulator
    edits: int = 40
    edit_min_s: float = 2.0
    edit_max_s: float = 6.0
    max_active: int = 24  # BFL's limit of active tasks, for the receiver and the polling loops alike
    # 7: peak memory with large samples
    big_samples: int = 50
    # 9: settled jobs already in the store (built once, cached; see tests.bench.settled)
    settled_jobs: int = 1_000_000

    @property
    def latency_jobs(self) -> int:
        return round(self.latency_rate * (self.latency_warmup_s + self.latency_window_s))

    @property
    def e2e_jobs(self) -> int:
        return round(self.e2e_rate * (self.e2e_warmup_s + self.e2e_window_s))


FULL = Plan(quick=False)
QUICK = Plan(
    quick=True,
    ack_warmup_s=1.0,
    ack_window_s=3.0,
    ack_pools=(16_000, 40_000),
    ack_pools_postgres=(8_000, 20_000),
    latency_window_s=3.0,
    completions=80,
    e2e_window_s=3.0,
    edits=12,
    edit_min_s=1.0,
    edit_max_s=3.0,
    big_samples=50,
    settled_jobs=100_000,
)
