"""Readings from /proc: a process's memory and CPU time, the native libraries it loaded, the machine."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int, field: str) -> int:
    """A `/proc/<pid>/status` figure in KiB: `VmRSS` (now) or `VmHWM` (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_tree(pid: int) -> list[int]:
    """The process and every descendant still running (a multi-process server's processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            parent = int(text[text.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def tree_memory_kib(pid: int, field: str) -> int:
    """`memory_kib` summed over the process tree (for `VmHWM`: each process's own peak, added up)."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += memory_kib(member, field)
    return total


def system_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, not idle or waiting on I/O)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores the machine keeps busy, averaged over `seconds` (what else is running)."""
    before = system_busy_seconds()
    time.sleep(seconds)
    return (system_busy_seconds() - before) / seconds


def loaded_libraries(pid: int, names: Sequence[str]) -> dict[str, bool]:
    """Whether each of `names` appears among the files mapped into the process or one of its children
    (native extensions; a multi-process server's supervisor serves nothing itself)."""
    maps = ""
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            maps += Path(f"/proc/{member}/maps").read_text()
    return {name: name in maps for name in names}


def machine_info() -> dict[str, object]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "kernel": os.uname().release,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
