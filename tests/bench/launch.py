"""Starting the run's servers as processes: the receiver (as `kontext-receiver serve` runs in
production), the bare baseline, the result server, the simulator and the canned-response server.

The receiver and the bare baseline both run one uvicorn process on loopback with uvicorn's defaults
for the event loop and HTTP parser (`auto`: uvloop and httptools when installed), no access log and
log level warning; `server_stack` reads from /proc which of those each process actually loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.bench.proc_info import loaded_libraries
from tests.bench.procs import PYTHON, Proc, Processes, free_port, python_env
from tests.bench.seed import SIGNING_KEY
from tests.integration.processes import receiver_env

ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "bench-token"
SIM_KEY = "bench-sim-key"
NO_UPSTREAM = "http://127.0.0.1:9"  # the ack and completion scenarios never call BFL
NATIVE = ("uvloop", "httptools")
PROCESSES = os.environ.get("BENCH_RECEIVER_PROCESSES", "")  # `serve --processes`; empty: its default


@dataclass(frozen=True)
class Server:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Receiver(Server):
    data: Path

    @property
    def sink(self) -> Path:
        return self.data / "events.jsonl"


def _uvicorn(app: str, port: int, *, factory: bool = False) -> list[str]:
    args = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    return [*args, *(["--factory"] if factory else []), "--no-access-log", "--log-level", "warning"]


def start_receiver(
    procs: Processes,
    name: str,
    data: Path,
    *,
    store_url: str | None = None,
    bfl_url: str = NO_UPSTREAM,
    **settings: str,
) -> Receiver:
    """`python -m receiver serve --port P` with production settings, its files under `data` (also
    its working directory, so no stray `.env` is read)."""
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    env = receiver_env(bfl_url, port, data, **settings) | {
        "BFL_API_KEY": SIM_KEY,
        "RECEIVER_SIGNING_KEYS": SIGNING_KEY,
        "RECEIVER_API_TOKENS": API_TOKEN,
        "RECEIVER_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    if store_url is not None:
        env["RECEIVER_STORE_URL"] = store_url
    args = [PYTHON, "-m", "receiver", "serve", "--port", str(port)]
    if PROCESSES:  # as many as the cores, unless the run asks for a number (a comparison)
        args += ["--processes", PROCESSES]
    proc = procs.start_server(name, args, env, f"http://127.0.0.1:{port}/readyz", cwd=data, timeout=60)
    return Receiver(proc, port, data)


def start_bare(procs: Processes, processes: int = 1) -> Server:
    port = free_port()
    args = _uvicorn("tests.bench.bare:app", port) + (["--workers", str(processes)] if processes > 1 else [])
    return Server(
        procs.start_server("bare", args, python_env(), f"http://127.0.0.1:{port}/readyz", ROOT), port
    )


def start_result_server(procs: Processes, samples: Path) -> Server:
    port = free_port()
    args = _uvicorn("tests.bench.result_server:create_app", port, factory=True)
    env = python_env(BENCH_SAMPLES_DIR=str(samples))
    return Server(procs.start_server("results", args, env, f"http://127.0.0.1:{port}/readyz", ROOT), port)


def start_simulator(procs: Processes, name: str, durations_s: tuple[float, float], seed: int) -> Server:
    """`kontext-receiver sim`, each task Pending for a time in `durations_s` that its prompt fixes."""
    port = free_port()
    low, high = durations_s
    env = python_env(
        SIM_API_KEYS=SIM_KEY, SIM_LATENCY_S=str(low), SIM_LATENCY_MAX_S=str(high), SIM_SEED=str(seed)
    )
    args = [PYTHON, "-m", "receiver", "sim", "--host", "127.0.0.1", "--port", str(port)]
    return Server(procs.start_server(name, args, env, f"http://127.0.0.1:{port}/_sim/stats", ROOT), port)


def start_canned(procs: Processes) -> Server:
    port = free_port()
    args = [PYTHON, "-m", "tests.bench.canned", str(port)]
    return Server(procs.start_server("canned", args, python_env(), f"http://127.0.0.1:{port}/", ROOT), port)


def server_stack(server: Server) -> dict[str, bool]:
    """Which of uvloop and httptools the server process has loaded."""
    return loaded_libraries(server.proc.pid, NATIVE)
