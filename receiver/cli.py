"""The `kontext-receiver` command."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from receiver import sse
from receiver.catalog import CATALOG
from receiver.errors import ConfigError, ReceiverError, StartupError
from receiver.logs import configure_logging
from receiver.models import FINAL_STATES, JobState
from receiver.progress import Progress
from receiver.retry import backoff
from receiver.settings import ClientSettings, Settings, SimSettings
from receiver.stores.feed import JOB_STATE

# Short names for the two Kontext models; every catalog name is accepted as well.
MODELS = {"pro": "flux-kontext-pro", "max": "flux-kontext-max"} | {name: name for name in CATALOG}


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        code = args.run(args)
    except ConfigError as exc:
        print(f"kontext-receiver: configuration error: {exc}", file=sys.stderr)
        code = 2
    except StartupError as exc:
        code = startup_failed(exc)
    except httpx.TransportError as exc:
        origin = exc.request.url.copy_with(path="/", query=None, userinfo=b"")
        print(f"kontext-receiver: cannot reach the receiver at {origin} ({exc})", file=sys.stderr)
        code = 1
    except (ReceiverError, httpx.HTTPError, TimeoutError) as exc:
        print(f"kontext-receiver: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # `jobs show ID | head`: the reader went away; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)


def startup_failed(exc: StartupError) -> int:
    print(f"kontext-receiver: cannot start: {exc}", file=sys.stderr)
    return 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kontext-receiver", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the whole path on embedded defaults and print the event")
    demo.add_argument("--data", type=Path, default=Path("data"), help="folder for the store, images, events")
    demo.set_defaults(run=_demo)

    serve = commands.add_parser("serve", help="run the receiver (HTTP app, worker, reconciler)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--no-worker",
        dest="workers",
        action="store_false",
        help="serve HTTP only; `kontext-receiver worker` processes sharing the store do the background work",
    )
    serve.add_argument(
        "--processes",
        type=_positive,
        help="processes to run: 1 does everything in one; N >= 2 are web and worker processes, or N web"
        " processes with --no-worker (default: the cores the CPU affinity and the CPU quota allow)",
    )
    serve.set_defaults(run=_serve, api=True)

    worker = commands.add_parser(
        "worker", help="run the background work alone (submit, fetch, reconcile, publish), with health checks"
    )
    worker.add_argument("--host", default="127.0.0.1")
    worker.add_argument("--port", type=int, default=8081, help="for /healthz, /readyz and /metrics")
    worker.set_defaults(run=_serve, api=False, workers=True, processes=1)

    sim = commands.add_parser("sim", help="run the BFL API simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.set_defaults(run=_sim)

    edit = commands.add_parser("edit", help="submit an edit through a running receiver and wait for it")
    edit.add_argument("image", type=Path)
    edit.add_argument("prompt")
    edit.add_argument(
        "--model",
        choices=list(MODELS),
        default="pro",
        metavar="MODEL",
        help=f"pro, max, or a model name: {', '.join(CATALOG)} (default: pro)",
    )
    edit.add_argument(
        "--ref",
        type=Path,
        action="append",
        default=[],
        metavar="IMAGE",
        help="a reference image, after the one to edit (repeatable, up to the model's limit)",
    )
    for option, kind in (("width", int), ("height", int), ("steps", int), ("guidance", float)):
        edit.add_argument(f"--{option}", type=kind, help=f"{option} (only for the models that take it)")
    edit.add_argument("--out", type=Path, help="write the edited image here")
    edit.add_argument(
        "--receiver", help="receiver base URL (default: $RECEIVER_URL or http://127.0.0.1:8080)"
    )
    edit.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for the outcome (default: 1800)"
    )
    edit.set_defaults(run=_edit)

    jobs = commands.add_parser("jobs", help="inspect jobs in the configured store, re-publish events")
    job_commands = jobs.add_subparsers(required=True, metavar="ACTION")
    listing = job_commands.add_parser("list", help="newest jobs first")
    listing.add_argument("--state", choices=[s.value for s in JobState])
    listing.add_argument("--dead-letter", action="store_true", help="only jobs with a dead-lettered delivery")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(run=_jobs_list)
    show = job_commands.add_parser("show", help="one job with its event and deliveries, as JSON")
    show.add_argument("id")
    show.set_defaults(run=_jobs_show)
    again = job_commands.add_parser("redeliver", help="publish a job's event to every sink again")
    again.add_argument("id")
    again.set_defaults(run=_jobs_redeliver)

    db = commands.add_parser("db", help="manage the job store named by $RECEIVER_STORE_URL")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    migrate = db_commands.add_parser("migrate", help="create or upgrade the store's tables")
    migrate.set_defaults(run=_db_migrate)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from receiver.demo import run_demo

    configure_logging("info", json=False)
    return anyio.run(run_demo, args.data, sys.stdout, Progress())


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _serve(args: argparse.Namespace) -> int:
    from receiver.processes.cores import usable_cores

    settings = Settings.from_env().check(api=args.api, workers=args.workers)
    configure_logging(settings.log_level, settings.log_json)
    processes = args.processes or usable_cores()
    if processes == 1:
        from receiver.web.server import serve

        serve(settings, args.host, args.port, api=args.api, workers=args.workers)
        return 0
    from receiver.processes.supervisor import supervise
    from receiver.services import open_services
    from receiver.sinks import sinks_from_settings

    sinks_from_settings(settings)  # a bad sink URL stops start-up here, as it does a single process

    async def open_once() -> None:  # and so does what cannot be opened: one message, not one a process
        async with open_services(settings):
            pass

    anyio.run(open_once)
    return supervise(settings, args.host, args.port, processes, workers=args.workers)


def _sim(args: argparse.Namespace) -> int:
    import uvicorn

    from receiver.simulator import create_sim_app

    configure_logging("info", json=False)
    uvicorn.run(create_sim_app(SimSettings.from_env()), host=args.host, port=args.port, log_level="info")
    return 0


def _edit(args: argparse.Namespace) -> int:
    client = ClientSettings.from_env()
    url = (args.receiver or client.receiver_url).rstrip("/")
    headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
    images = [_read_base64(path) for path in (args.image, *args.ref)]
    options = {key: getattr(args, key) for key in ("width", "height", "steps", "guidance")}
    body = {"prompt": args.prompt, "images": images, "model": MODELS[args.model]}
    progress = Progress()
    with httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(30.0, read=90.0)) as http:
        answer = http.post(
            "/v1/edits", json=body | {key: value for key, value in options.items() if value is not None}
        )
        job = _ok(answer, 202)
        progress.update(f"job {job['id']}: {job['state']}")
        if job["state"] not in FINAL_STATES:
            _follow(http, job["id"], progress, args.timeout)
        job = _ok(http.get(f"/v1/jobs/{job['id']}"), 200)
        progress.done(f"job {job['id']}: {job['outcome']}")
        if job["outcome"] != "completed":
            print(json.dumps(job["error"], indent=2), file=sys.stderr)
            return 1
        if args.out:
            with http.stream("GET", f"/v1/jobs/{job['id']}/image") as response, args.out.open("wb") as out:
                if response.status_code != 200:
                    raise ReceiverError(f"image download answered {response.status_code}")
                for chunk in response.iter_bytes():
                    out.write(chunk)
            print(f"edited image written to {args.out}")
    print(json.dumps(job, indent=2))
    return 0


def _read_base64(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode()
    except OSError as exc:
        raise ReceiverError(f"cannot read {path}: {exc.strerror}") from exc


RECONNECT_BASE_S, RECONNECT_CAP_S = 0.25, 5.0  # `edit`'s waits between tries to resume the stream


def _follow(
    http: httpx.Client,
    job_id: str,
    progress: Progress,
    timeout: float,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """Show each state of the job as `/v1/events` announces it, until a final one; a dropped stream is
    resumed where it broke off (`Last-Event-ID`)."""
    last_id: str | None = None
    failures = 0
    while progress.elapsed() <= timeout:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with http.stream("GET", "/v1/events", params={"job": job_id}, headers=headers) as stream:
                if stream.status_code != 200:
                    stream.read()
                    _ok(stream, 200)
                failures = 0
                for message in sse.parse(stream.iter_lines()):
                    last_id = message.id or last_id
                    if message.event == JOB_STATE:
                        state = json.loads(message.data)["state"]
                        progress.update(f"job {job_id}: {state}")
                        if state in FINAL_STATES:
                            return
                    if progress.elapsed() > timeout:
                        break
        except httpx.TransportError as exc:  # dropped or timed out: resume, sooner for a blip
            failures += 1
            delay = backoff(failures, RECONNECT_BASE_S, RECONNECT_CAP_S, job_id)
            progress.update(f"job {job_id}: reconnecting in {delay:.1f}s ({type(exc).__name__})")
            sleep(min(delay, max(0.0, timeout - progress.elapsed())))
    raise TimeoutError(f"no outcome for job {job_id} after {timeout:.0f}s")


def _ok(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise ReceiverError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    body: dict[str, Any] = response.json()
    return body


def _jobs_list(args: argparse.Namespace) -> int:
    async def run() -> None:
        async with _store() as store:
            state = JobState(args.state) if args.state else None
            for job in await store.list_jobs(state=state, dead_letter=args.dead_letter, limit=args.limit):
                error = (job.error or {}).get("code", "")
                model = job.request.model
                print(f"{job.id}  {job.state.value:<10} {model:<17} {error:<16} {job.request.prompt[:40]}")

    anyio.run(run)
    return 0


def _jobs_show(args: argparse.Namespace) -> int:
    from receiver.web.views import job_view

    async def run() -> int:
        async with _store() as store:
            job = await store.get(args.id)
            if job is None:
                print(f"no job {args.id}", file=sys.stderr)
                return 1
            event = await store.event(job.id)
            view = job_view(job, await store.deliveries(job.id))
            view["event"] = event.to_dict() if event else None
            print(json.dumps(view, indent=2))
            return 0

    return anyio.run(run)


def _jobs_redeliver(args: argparse.Namespace) -> int:
    from receiver.sinks import sink_from_url

    settings = Settings.from_env()
    names = [sink_from_url(url).name for url in settings.sinks]

    async def run() -> int:
        async with _store() as store:
            if await store.get(args.id) is None:
                print(f"no job {args.id}", file=sys.stderr)
                return 1
            count = await store.redeliver(args.id, names, time.time())
            if count == 0:
                print(f"job {args.id} has no event yet", file=sys.stderr)
                return 1
            print(f"event {args.id} queued for {', '.join(names)}; a running receiver delivers it")
            return 0

    return anyio.run(run)


def _db_migrate(args: argparse.Namespace) -> int:
    from receiver.registry import redact, scheme_of
    from receiver.stores import store_from_url

    url = Settings.from_env().store_url
    store = store_from_url(url)  # an unknown scheme or a missing driver fails here, with the fix

    async def run() -> list[str] | None:
        if scheme_of(url) in {"postgresql", "postgres"}:
            from receiver.stores.postgres import migrate

            return await migrate(url)
        async with store:  # the other stores create their tables when opened
            return None

    applied = anyio.run(run)
    for name in applied or ():
        print(f"applied {name}")
    if applied is None:
        print(f"store {redact(url)} is ready")
    elif not applied:
        print(f"store {redact(url)} is up to date: nothing to apply")
    return 0


def _store() -> Any:
    from receiver.stores import store_from_url
    from receiver.stores.sqlite import SQLiteStore

    url = Settings.from_env().store_url
    store = store_from_url(url)
    # Opening a SQLite path creates it: a `jobs` command run away from the receiver's folder would
    # show an empty, new store rather than say it is looking in the wrong place.
    if isinstance(store, SQLiteStore) and store.path != ":memory:" and not Path(store.path).exists():
        raise ReceiverError(
            f"no store at {Path(store.path).resolve()} (RECEIVER_STORE_URL={url}): run this where the "
            "receiver runs, or set RECEIVER_STORE_URL to its database"
        )
    return store
