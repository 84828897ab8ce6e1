"""The receiver as a real process (`kontext-receiver serve`, or `serve --no-worker` and `worker` apart),
to be stopped, killed and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.integration.stack import SIM_KEY, TOKEN
from tests.servers import wait_until

SIGNING_KEY = "process-signing-key"


def receiver_env(sim_url: str, port: int, data: Path, **overrides: str) -> dict[str, str]:
    """The environment of a production-configured receiver in front of the simulator."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "BFL_", "SIM_"))}
    return (
        clean
        | {
            "BFL_API_URL": sim_url,
            "BFL_API_KEY": SIM_KEY,
            "RECEIVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "RECEIVER_SIGNING_KEYS": SIGNING_KEY,
            "RECEIVER_API_TOKENS": TOKEN,
            "RECEIVER_STORE_URL": f"sqlite:///{data / 'receiver.db'}",
            "RECEIVER_BLOB_URL": f"file://{data / 'images'}",
            "RECEIVER_SINKS": f"file://{data / 'events.jsonl'}",
            "RECEIVER_SAMPLE_HOSTS": "127.0.0.1",
            "RECEIVER_LOG_LEVEL": "warning",
        }
        | overrides
    )


class ReceiverProcess:
    def __init__(
        self,
        env: Mapping[str, str],
        port: int,
        log: Path,
        command: Sequence[str] = ("serve",),
        processes: int = 1,
    ) -> None:
        self.env = dict(env)
        self.command = list(command)
        self.port = port
        self.processes = processes
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [*self.command, "--port", str(self.port)]
        if self.command[0] == "serve":
            args += ["--processes", str(self.processes)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "receiver", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.ready, 20, f"the receiver on port {self.port} to be ready")

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"receiver exited with {self.process.returncode}; see {self.log}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def signal(self, signum: int) -> int:
        """Send `signum` and wait for the process to end; return its exit code."""
        assert self.process is not None
        self.process.send_signal(signum)
        code = self.process.wait(timeout=60)
        self.process = None
        return code

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


@contextmanager
def receiver_process(
    env: Mapping[str, str], port: int, log: Path, command: Sequence[str] = ("serve",), processes: int = 1
) -> Iterator[ReceiverProcess]:
    """`kontext-receiver serve` (or `command`): `serve` in one process, or a supervisor with
    `processes` web and worker ones."""
    receiver = ReceiverProcess(env, port, log, command, processes)
    receiver.start()
    try:
        yield receiver
    finally:
        if receiver.process is not None:
            receiver.process.kill()
            receiver.process.wait(timeout=30)
