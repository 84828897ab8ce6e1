"""The load generator, playing BFL: `python -m tests.bench.loadgen SPEC.json RESULT.json`.

It runs in a process of its own (never sharing a GIL with what it measures), on uvloop, with every
request built before the clock starts. Two drivers:

- closed loop: C connections, each sending its next webhook as soon as the previous one is answered;
  the rate is the responses completed in the measured window (after a warm-up) over its length;
- open loop: one webhook every 1/R s on a schedule fixed in advance, on whichever connection is free
  (a new one is opened when none is); latency runs from the *scheduled* time, so a slow server cannot
  hide its queueing by slowing the generator down (no coordinated omission).

With `watch`, the sink file is watched too and each job's event is timestamped as it appears.
Times are `time.perf_counter()` (CLOCK_MONOTONIC), relative to the run's start.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path

import uvloop

from tests.bench.http1 import Connection, connect
from tests.bench.pacer import Pacer
from tests.bench.proc_info import system_busy_seconds, tree_cpu_seconds
from tests.bench.watcher import SinkWatcher
from tests.bench.workload import Result, Spec, build_all


class Driver:
    def __init__(self, spec: Spec, requests: list[bytes]) -> None:
        self.spec = spec
        self.requests = requests
        self.result = Result()
        self.idle: deque[Connection] = deque()
        self.pending: deque[int] = deque()  # open loop: due requests waiting for a connection
        self.opening = 0
        self.open_connections = 0
        self.window: tuple[float, float] = (0.0, float("inf"))
        self.finished = asyncio.Event()
        self.stopping = False
        self.next_index = 0
        self.outstanding = 0
        self.scheduled: list[float] = [0.0] * len(requests)
        self.growing: set[asyncio.Future[None]] = set()  # connections being opened (open loop)
        self.cpu_marks: list[tuple[float, float, float, float]] = []  # wall, own, server, machine CPU

    def mark(self) -> None:
        """Note the time and both CPU clocks at a window edge."""
        server = tree_cpu_seconds(self.spec.server_pid) if self.spec.server_pid else 0.0
        self.cpu_marks.append((time.perf_counter(), time.process_time(), server, system_busy_seconds()))

    def window_cpu(self) -> None:
        if len(self.cpu_marks) >= 2:
            (_, own0, server0, machine0), (_, own1, server1, machine1) = self.cpu_marks[0], self.cpu_marks[-1]
            self.result.window_cpu_s = own1 - own0
            self.result.window_server_cpu_s = server1 - server0
            self.result.window_machine_cpu_s = machine1 - machine0

    # -- connections ---------------------------------------------------------------------------

    async def open_connection(self) -> Connection:
        self.opening += 1
        try:
            conn = await connect(self.spec.host, self.spec.port, self.on_response, self.on_lost)
        finally:
            self.opening -= 1
        self.open_connections += 1
        self.result.connections += 1
        return conn

    def on_lost(self, conn: Connection, exc: Exception | None) -> None:
        self.open_connections -= 1
        if conn.busy:
            self.result.errors.append(f"connection lost mid-request: {exc!r}")
            self.outstanding -= 1
            self._check_done()
        if conn in self.idle:
            self.idle.remove(conn)

    def on_response(self, conn: Connection, status: int, now: float) -> None:
        result = self.result
        result.completed += 1
        self.outstanding -= 1
        key = str(status)
        result.statuses[key] = result.statuses.get(key, 0) + 1
        if now > result.last_response_s:
            result.last_response_s = now
        start = self.scheduled[conn.tag] if self.spec.mode == "open" else conn.sent_at
        counted_at = start if self.spec.mode == "open" else now
        if self.window[0] <= counted_at <= self.window[1]:
            result.window_completed += 1
            result.latencies_s.append(now - start)
        if self.spec.mode == "open":
            if self.pending:
                self._send(conn, self.pending.popleft())
            else:
                self.idle.append(conn)
        else:
            self._next_closed(conn)
        self._check_done()

    def _send(self, conn: Connection, index: int) -> None:
        conn.send(self.requests[index], index)
        self.outstanding += 1
        self.result.sent += 1
        if self.spec.mode == "closed":
            self.scheduled[index] = conn.sent_at
        if self.result.first_send_s == 0.0:
            self.result.first_send_s = conn.sent_at

    # -- closed loop ---------------------------------------------------------------------------

    def _next_closed(self, conn: Connection) -> None:
        if self.stopping:
            return
        if self.next_index >= len(self.requests) and self.spec.cycle:
            self.next_index = 0
        if self.next_index >= len(self.requests):
            if not self.result.exhausted:
                self.result.exhausted = self.spec.duration_s > 0
                if self.result.exhausted:
                    self.window = (self.window[0], time.perf_counter())
            return
        index = self.next_index
        self.next_index += 1
        self._send(conn, index)

    async def run_closed(self) -> None:
        conns = [await self.open_connection() for _ in range(self.spec.concurrency)]
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        if self.spec.duration_s > 0:
            self.window = (start + self.spec.warmup_s, start + self.spec.warmup_s + self.spec.duration_s)
            loop.call_at(loop.time() + self.spec.warmup_s, self.mark)
            loop.call_at(loop.time() + self.spec.warmup_s + self.spec.duration_s, self._stop)
        else:
            self.mark()
        for conn in conns:
            self._next_closed(conn)
        await self.finished.wait()
        if self.spec.duration_s <= 0 or self.result.exhausted:
            self.mark()
        end = min(self.window[1], time.perf_counter())
        self.result.window_s = end - self.window[0] if self.spec.duration_s > 0 else end - start
        if self.spec.duration_s <= 0:
            self.result.window_completed = self.result.completed
        for conn in conns:
            conn.close()

    def _stop(self) -> None:
        self.mark()
        self.stopping = True
        self._check_done()

    def _check_done(self) -> None:
        if self.outstanding > 0:
            return
        if self.spec.mode == "closed" and (self.stopping or self.next_index >= len(self.requests)):
            self.finished.set()
        all_sent = self.result.sent >= len(self.requests)
        if self.spec.mode == "open" and all_sent and not self.pending:
            self.finished.set()

    # -- open loop -----------------------------------------------------------------------------

    async def run_open(self) -> None:
        for _ in range(self.spec.concurrency):
            self.idle.append(await self.open_connection())
        interval = 1.0 / self.spec.rate
        begin = time.perf_counter() + 0.05
        self.scheduled = [begin + i * interval for i in range(len(self.requests))]
        # Responses to webhooks scheduled in the warm-up are not counted.
        self.window = (begin + self.spec.warmup_s, float("inf"))
        pacer = Pacer(self.scheduled, self._dispatch)
        pacer.start()
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + (self.window[0] - time.perf_counter()), self.mark)
        try:
            await self.finished.wait()
        finally:
            pacer.close()
        self.mark()
        self.result.window_s = self.result.last_response_s - self.window[0]
        for conn in list(self.idle):
            conn.close()

    def _dispatch(self, index: int) -> None:
        lag = time.perf_counter() - self.scheduled[index]
        if self.scheduled[index] >= self.window[0]:
            self.result.send_lag_s.append(lag)
        if self.idle:
            self._send(self.idle.popleft(), index)
            return
        self.pending.append(index)
        if self.open_connections + self.opening < self.spec.max_connections:
            task = asyncio.ensure_future(self._grow())
            self.growing.add(task)
            task.add_done_callback(self.growing.discard)

    async def _grow(self) -> None:
        try:
            conn = await self.open_connection()
        except OSError as exc:
            self.result.errors.append(f"connect failed: {exc!r}")
            return
        if self.pending:
            self._send(conn, self.pending.popleft())
        else:
            self.idle.append(conn)


async def run(spec: Spec) -> Result:
    requests = build_all(spec)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    driver = Driver(spec, requests)
    driver.result.priority_raised = _raise_priority()
    watcher = SinkWatcher(Path(spec.watch)) if spec.watch else None
    if watcher is not None:
        watcher.__enter__()
    try:
        if spec.mode == "open":
            await driver.run_open()
        else:
            await driver.run_closed()
        result = driver.result
        if watcher is not None:
            wanted = {t.job_id for t in spec.targets}
            result.all_events = await watcher.wait_for(wanted, spec.watch_timeout_s)
            result.events_s = {i: s.at - t0 for i, s in watcher.seen.items() if i in wanted}
    finally:
        if watcher is not None:
            watcher.__exit__(None, None, None)
    driver.window_cpu()
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = time.process_time() - cpu0
    result.scheduled_s = {
        t.job_id: at - t0 for t, at in zip(spec.targets, driver.scheduled, strict=True) if at
    }
    result.first_send_s = result.first_send_s - t0 if result.first_send_s else 0.0
    result.last_response_s = result.last_response_s - t0 if result.last_response_s else 0.0
    return result


def _raise_priority() -> bool:
    """Ask the scheduler to run the generator first when it has work (it needs little CPU): on a
    machine with few cores, the server's own threads would otherwise delay the generator's sends, and
    that delay would be counted as the server's latency. Needs root or CAP_SYS_NICE; best effort."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        return False
    return True


def main(argv: list[str]) -> int:
    spec = Spec.load(Path(argv[0]))
    result = uvloop.run(run(spec))
    Path(argv[1]).write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
