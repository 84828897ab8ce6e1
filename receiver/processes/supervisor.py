"""`serve --processes N`: the supervisor of web and worker processes, started and stopped together.

The supervisor binds the listening socket and starts N processes: web processes, which answer HTTP on
that socket and do no background work, and worker processes, which submit, download, store, publish
and reconcile, woken at once through a pipe each (`wakebus`; on PostgreSQL also by LISTEN/NOTIFY, as
`kontext-receiver worker` processes elsewhere are). With `--no-worker`, every process answers HTTP.
The supervisor does nothing else: SIGTERM (or SIGINT) is passed to every process, each drains as a
single `serve` does, and the supervisor exits when all have, re-raising the signal. A process that
exits by itself stops the others, and the supervisor exits 1 for whatever restarts it. A SIGKILL of
the supervisor kills every process (PR_SET_PDEATHSIG on Linux; elsewhere a process finding its parent
gone at start exits).

Every process counts its metrics in a directory the supervisor makes for the serve (prometheus-client's
multiprocess mode, `receiver.metrics`), under the temp directory, and removes once all have ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from prometheus_client.multiprocess import mark_process_dead

from receiver.errors import ConfigError
from receiver.metrics import MULTIPROCESS_DIR
from receiver.settings import Settings

log = structlog.get_logger("receiver.processes")

BIND_WAIT_S = 10.0  # a restart may find the port still held by processes that are shutting down
KILL_AFTER_S = 10.0  # past the grace period, processes still running are killed
_PR_SET_PDEATHSIG = 1
_WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}


@dataclass(frozen=True)
class Split:
    web: int
    workers: int

    @classmethod
    def of(cls, processes: int, *, workers: bool = True) -> Split:
        """Half the processes (rounded up) answer HTTP, the rest work, at least one each; without
        `workers` (`serve --no-worker`), every process answers HTTP."""
        if processes < 2:
            raise ConfigError(f"a multi-process serve needs at least 2 processes, not {processes}")
        if not workers:
            return cls(web=processes, workers=0)
        return cls(web=processes - processes // 2, workers=processes // 2)


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the supervisor blocks signals it waits for
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def bind(host: str, port: int, wait_s: float = BIND_WAIT_S) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_s
    while True:
        try:
            listener = socket.create_server((host, port), family=family, backlog=2048)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            listener.set_inheritable(True)
            return listener


class Supervisor:
    def __init__(self, settings: Settings, host: str, port: int, processes: int, *, workers: bool) -> None:
        self.settings = settings
        self.split = Split.of(processes, workers=workers)
        self.host, self.port = host, port
        self.children: list[subprocess.Popen[bytes]] = []
        self.metrics_dir = ""

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)  # taken by sigwaitinfo below
        listener = bind(self.host, self.port)
        self.metrics_dir = tempfile.mkdtemp(prefix="kontext-receiver-metrics-")
        try:
            self._start_all(listener)
            code, stop_signal = self._wait()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if stop_signal is not None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
            signal.signal(stop_signal, signal.SIG_DFL)
            os.kill(os.getpid(), stop_signal)  # exit by the signal, as uvicorn does
        return code  # still here: PID 1 of a container ignores it, and exits 0 as uvicorn there

    def _start_all(self, listener: socket.socket) -> None:
        pipes = [os.pipe() for _ in range(self.split.workers)]
        try:
            for read_end, _ in pipes:
                self._start("worker", ["--wake-fd", str(read_end)], (read_end,))
            writers = [write_end for _, write_end in pipes]
            web = ["--listen-fd", str(listener.fileno()), "--wake-fds", ",".join(map(str, writers))]
            for _ in range(self.split.web):
                self._start("web", web, (listener.fileno(), *writers))
        finally:
            listener.close()  # the web processes have it now
            for read_end, write_end in pipes:
                os.close(read_end)
                os.close(write_end)
        pids = [child.pid for child in self.children]
        log.info("serve.started", web=self.split.web, workers=self.split.workers, pids=pids)

    def _start(self, role: str, extra: Sequence[str], fds: Sequence[int]) -> None:
        args = [sys.executable, "-m", "receiver.processes.child", role, "--parent", str(os.getpid()), *extra]
        env = os.environ | {MULTIPROCESS_DIR: self.metrics_dir}
        self.children.append(
            subprocess.Popen(args, pass_fds=tuple(fds), env=env, preexec_fn=_child_setup)  # noqa: S603
        )

    def _wait(self) -> tuple[int, int | None]:
        """Until every process has ended: the exit code, and the signal that stopped the serve."""
        while True:
            info = signal.sigwaitinfo(_WATCHED)
            if info.si_signo == signal.SIGCHLD:
                exited = [child for child in self.children if child.poll() is not None]
                if exited:
                    codes = {child.pid: child.returncode for child in exited}
                    log.error("serve.process_exited", exited=codes)
                    self._stop_all(signal.SIGTERM)
                    self._reap()
                    return 1, None
            else:
                stop_signal = info.si_signo
                log.info("serve.stopping", signal=signal.Signals(stop_signal).name)
                self._stop_all(signal.SIGTERM)
                self._reap()
                return 0, stop_signal

    def _stop_all(self, signum: int) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)

    def _reap(self) -> None:
        """Wait for every process to end, killing those still running past the grace period."""
        deadline = time.monotonic() + self.settings.shutdown_grace_s + KILL_AFTER_S
        for child in self.children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("serve.process_killed", pid=child.pid)
                child.kill()
                child.wait()
            mark_process_dead(child.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        log.info("serve.stopped")


def supervise(settings: Settings, host: str, port: int, processes: int, *, workers: bool = True) -> int:
    return Supervisor(settings, host, port, processes, workers=workers).run()
