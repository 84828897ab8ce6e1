"""The processes a multi-process `serve` starts: `python -m receiver.processes.child web|worker ...`.

A web process answers HTTP on the listening socket it inherits and passes wake-ups on to the worker
processes; a worker process runs the background loops, woken by its pipe. Both stop as a single
`serve` does on SIGTERM, and on Linux die with the supervisor (PR_SET_PDEATHSIG, set before exec).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence

import anyio

from receiver.cli import startup_failed
from receiver.errors import StartupError
from receiver.logs import configure_logging
from receiver.processes.wakebus import WakeSender, listen
from receiver.services import open_services
from receiver.settings import Settings
from receiver.web.app import create_app
from receiver.web.server import server
from receiver.worker.runner import running_workers
from receiver.worker.scheduler import Scheduler


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="receiver.processes.child")
    parser.add_argument("role", choices=["web", "worker"])
    parser.add_argument("--parent", type=int, required=True, help="the supervisor's pid")
    parser.add_argument("--listen-fd", type=int, help="web: the listening socket")
    parser.add_argument("--wake-fds", default="", help="web: a pipe to each worker, comma-separated")
    parser.add_argument("--wake-fd", type=int, help="worker: its pipe")
    args = parser.parse_args(argv)
    if os.getppid() != args.parent:  # the supervisor died before this process could watch for it
        sys.exit(1)
    settings = Settings.from_env().check(api=args.role == "web", workers=args.role == "worker")
    configure_logging(settings.log_level, settings.log_json)
    try:
        if args.role == "web":
            wake_fds = [int(fd) for fd in args.wake_fds.split(",") if fd]
            run_web(settings, args.listen_fd, wake_fds)  # (none with `serve --no-worker`)
        else:
            anyio.run(run_worker, settings, args.wake_fd, backend_options={"use_uvloop": True})
    except StartupError as exc:
        sys.exit(startup_failed(exc))


def run_web(settings: Settings, listen_fd: int, wake_fds: list[int]) -> None:
    app = create_app(settings, workers=False, forward_wakeups=WakeSender(wake_fds).send)
    listener = socket.socket(fileno=listen_fd)
    server(settings, app).run(sockets=[listener])


async def run_worker(settings: Settings, wake_fd: int) -> None:
    async with open_services(settings) as svc:
        sched = Scheduler.for_services(svc)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, sched.stop)
        listen(wake_fd, sched.wake)
        async with running_workers(svc, sched), anyio.create_task_group() as tg:
            # No scrape reaches this process: it writes the store's figures for the web processes.
            tg.start_soon(svc.metrics.report_figures, svc.store, list(svc.sinks), svc.clock)
            await sched.stopping.wait()
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    main()
