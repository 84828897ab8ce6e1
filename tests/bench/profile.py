"""`--profile`: py-spy samples the receiver during the figure-1 run (`py-spy record --format raw`:
collapsed stacks), summarised as the frames with the most samples, idle waits left out.

Sampling costs the receiver a little, so a profiled run's figure 1 is marked `profiled`."""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.bench.procs import Proc, Processes, python_env


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_profile(procs: Processes, pid: int, seconds: float, out: Path) -> Proc | None:
    binary = py_spy()
    if binary is None:
        return None
    # --gil: only the thread holding the GIL is sampled, i.e. where the Python time goes (the event
    # loop and the store's threads take turns on one GIL); --nonblocking: the receiver is never
    # paused to be sampled, so the figure measured meanwhile moves little; --subprocesses: every
    # process of a multi-process serve.
    args = [binary, "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", "200"]
    args += ["--subprocesses"]
    args += ["--gil", "--nonblocking", "--threads", "--format", "raw", "--output", str(out)]
    return procs.start("py-spy", args, python_env())


@dataclass(frozen=True)
class Hotspots:
    samples: int
    threads: list[tuple[str, float]]  # thread, share of samples
    packages: list[tuple[str, float]]  # package of the innermost frame, share of samples
    self_time: list[tuple[str, float]]  # innermost frame, share of samples
    receiver: list[tuple[str, float]]  # receiver functions anywhere on the stack, share of samples


# Leaf frames of a thread that is waiting, not working (py-spy cannot always tell in a container).
IDLE_LEAVES = ("Condition.wait ", "Queue.get ", "Event.wait ", "select (selectors", "_worker (concurrent")
# Receiver frames every sample of a thread passes through: they say nothing.
ENTRY_POINTS = ("receiver/__main__.py", "receiver/cli.py", "receiver/web/server.py")


def _path(frame: str) -> str:
    return frame[frame.rfind("(") + 1 :].rsplit(":", 1)[0] if frame.endswith(")") else ""


def package(frame: str) -> str:
    """`receiver.stores`, `uvicorn`, `json`, ...; `native` when no Python frame was running."""
    path = _path(frame)
    if not path or frame.startswith("thread ("):
        return "native (C code holding the GIL: uvloop, httptools, sqlite3, ...)"
    if path.startswith("<frozen "):
        return path.removeprefix("<frozen ").split(".")[0].rstrip(">")
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:2]) if parts[0] == "receiver" and len(parts) > 2 else parts[0]


def summarise(collapsed: Path, top: int = 15) -> Hotspots:
    """Read py-spy's raw output: `thread;frame;frame;... count` per line, outermost frame first."""
    threads: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    receiver: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            continue
        total += count
        threads[frames[0].split(": ", 1)[-1]] += count
        own[frames[-1]] += count
        packages[package(frames[-1])] += count
        for frame in set(frames[1:]):
            path = _path(frame)
            if path.startswith("receiver/") and not path.startswith(ENTRY_POINTS):
                receiver[frame] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(n / total, 4)) for frame, n in counter.most_common(top)] if total else []

    return Hotspots(total, shares(threads), shares(packages), shares(own), shares(receiver))


def render(spots: Hotspots) -> str:
    lines = [f"py-spy: {spots.samples} samples holding the GIL, receiver, figure-1 run"]
    for title, rows in (
        ("by thread", spots.threads[:5]),
        ("by package of the innermost frame", spots.packages[:10]),
        ("innermost frames", spots.self_time[:12]),
        ("receiver functions, inclusive", spots.receiver[:12]),
    ):
        lines.append(f"  {title}:")
        lines += [f"    {share * 100:5.1f}%  {frame}" for frame, share in rows]
    return "\n".join(lines)
