"""How many cores this process may use: its CPU affinity, capped by its cgroup's CPU quota."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cores_allowed(affinity: int, quota_us: int | None, period_us: int | None) -> int:
    """The cores a quota of `quota_us` per `period_us` (None: no quota) leaves of `affinity`; at least 1.
    A quota of 1.5 cores counts as 2: the half core left is still worth a process."""
    if quota_us is None or period_us is None or quota_us <= 0 or period_us <= 0:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(quota_us / period_us)))


def parse_cpu_max(text: str) -> tuple[int | None, int | None]:
    """cgroup v2 `cpu.max`: `"max 100000"` (no quota) or `"200000 100000"`."""
    quota, _, period = text.strip().partition(" ")
    if quota == "max" or not period:
        return None, None
    return int(quota), int(period)


def usable_cores(cgroup: Path = CGROUP) -> int:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota: tuple[int | None, int | None] = (None, None)
    with contextlib.suppress(OSError, ValueError):
        if (cgroup / "cpu.max").exists():  # cgroup v2
            quota = parse_cpu_max((cgroup / "cpu.max").read_text())
        elif (cgroup / "cpu" / "cpu.cfs_quota_us").exists():  # cgroup v1
            quota = (
                int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text()),
                int((cgroup / "cpu" / "cpu.cfs_period_us").read_text()),
            )
    return cores_allowed(affinity, *quota)
