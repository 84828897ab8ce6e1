"""How many processes `serve` runs, how it splits them, and the wake-ups between them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from receiver.errors import ConfigError
from receiver.processes.cores import cores_allowed, parse_cpu_max, usable_cores
from receiver.processes.supervisor import Split
from receiver.processes.wakebus import WakeSender, listen
from receiver.worker.handover import Work


@pytest.mark.parametrize(
    ("affinity", "quota", "period", "cores"),
    [
        (8, None, None, 8),  # no quota: the affinity
        (8, 200_000, 100_000, 2),
        (8, 150_000, 100_000, 2),  # 1.5 cores: the half is worth a process
        (8, 50_000, 100_000, 1),
        (2, 800_000, 100_000, 2),  # a quota above the affinity: the affinity
        (0, None, None, 1),
    ],
)
def test_cores_allowed(affinity: int, quota: int | None, period: int | None, cores: int) -> None:
    assert cores_allowed(affinity, quota, period) == cores


def test_parse_cpu_max() -> None:
    assert parse_cpu_max("max 100000\n") == (None, None)
    assert parse_cpu_max("250000 100000\n") == (250_000, 100_000)


def test_usable_cores_reads_cgroup_v2_and_v1(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("100000 100000\n")
    assert usable_cores(tmp_path / "v2") == 1
    (tmp_path / "v1" / "cpu").mkdir(parents=True)
    (tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "v1" / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(tmp_path / "v1") == affinity
    assert usable_cores(tmp_path / "none") == affinity


@pytest.mark.parametrize(("processes", "web", "workers"), [(2, 1, 1), (3, 2, 1), (4, 2, 2), (7, 4, 3)])
def test_split_gives_half_rounded_up_to_http(processes: int, web: int, workers: int) -> None:
    assert Split.of(processes) == Split(web, workers)


def test_split_needs_two_processes() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        Split.of(1)


def received(read_end: int) -> set[Work]:
    """What the first read of `read_end` wakes (waiting at most 5 s for it)."""

    async def receive() -> set[Work]:
        woken: set[Work] = set()
        arrived = asyncio.Event()

        def wake(*work: Work) -> None:
            woken.update(work)
            arrived.set()

        listen(read_end, wake)
        await asyncio.wait_for(arrived.wait(), 5)
        return woken

    return asyncio.run(receive())


def test_wake_ups_cross_a_pipe() -> None:
    read_end, write_end = os.pipe()
    WakeSender([write_end]).send((Work.PUBLISH, Work.SUBMIT))
    try:
        assert received(read_end) == {Work.PUBLISH, Work.SUBMIT}
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_full_pipe_never_blocks_the_sender() -> None:
    """Wake-ups already waiting in the pipe wake the worker; more of them would add nothing."""
    read_end, write_end = os.pipe()
    sender = WakeSender([write_end])
    for _ in range(100_000):  # far more than a pipe holds
        sender.send((Work.FETCH,))
    try:
        assert received(read_end) == {Work.FETCH}
    finally:
        os.close(read_end)
        os.close(write_end)
