"""Processes of the run: started with a log file each, and killed on exit whatever happens."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # The child gets SIGKILL when the harness dies, even by SIGKILL; Popen is only called from the
    # main thread, whose exit is what the kernel watches.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Proc:
    """One child process, its output in `log`."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        # The whole process group (each process starts its own session): a server's own children too,
        # such as `uvicorn --workers` processes, which would otherwise outlive the run. Only while the
        # process is not reaped: until then its pid cannot name another group.
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        """Wait for the process to end by itself; kill it and raise past `timeout`."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} did not finish within {timeout:.0f}s:\n{self.tail()}") from None


class Processes:
    """Starts processes and kills every one still running when the block exits."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[Proc] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> Proc:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the harness only; it stops the rest
                preexec_fn=_die_with_parent,
            )
        proc = Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def start_server(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        ready_url: str,
        cwd: Path | None = None,
        timeout: float = 30.0,
    ) -> Proc:
        """Start a server and wait until `ready_url` answers 200."""
        proc = self.start(name, args, env, cwd)
        wait_ready(proc, ready_url, timeout)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.kill()
        if proc in self._procs:
            self._procs.remove(proc)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in reversed(self._procs):
            proc.kill()
        self._procs.clear()


def wait_ready(proc: Proc, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while True:
            proc.check_alive()
            with contextlib.suppress(httpx.TransportError):
                if client.get(url).status_code == 200:
                    return
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{proc.name} not ready at {url} after {timeout:.0f}s:\n{proc.tail()}")
            time.sleep(0.05)


def python_env(**extra: str) -> dict[str, str]:
    """This environment without the receiver's and simulator's variables, plus `extra`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "BFL_", "SIM_", "BENCH_"))}
    return clean | {"PYTHONUNBUFFERED": "1"} | extra


PYTHON = sys.executable
