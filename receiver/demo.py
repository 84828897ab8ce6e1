"""`kontext-receiver demo`: the whole path in one process on embedded defaults.

The simulator and the receiver run side by side on free loopback ports; the guide's example edit is
submitted on a bundled image, and the demo waits for its completion event to appear in the JSONL sink.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
import uvicorn
from starlette.types import ASGIApp

from receiver.errors import ReceiverError
from receiver.progress import Progress
from receiver.settings import Settings, SimSettings
from receiver.simulator import create_sim_app
from receiver.web.app import create_app

PROMPT = "Change the car color to red"
TIMEOUT_S = 120.0


def demo_settings(data_dir: Path, bfl_url: str, public_url: str) -> Settings:
    return Settings(
        demo=True,
        bfl_api_url=bfl_url,
        bfl_api_key="demo-key",
        public_url=public_url,
        signing_keys=(secrets.token_urlsafe(32),),
        store_url=f"sqlite:///{data_dir / 'receiver.db'}",
        blob_url=f"file://{data_dir / 'images'}",
        sinks=(f"file://{data_dir / 'events.jsonl'}",),
        sample_hosts=("127.0.0.1",),
        log_json=False,
    )


async def run_demo(data_dir: Path, out: TextIO, progress: Progress) -> int:
    sim_socket, receiver_socket = _listen(), _listen()
    sim_url, receiver_url = _url(sim_socket), _url(receiver_socket)
    settings = demo_settings(data_dir, sim_url, receiver_url)
    sim = _server(create_sim_app(SimSettings.from_env()))
    receiver = _server(create_app(settings))
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(sim.serve, [sim_socket])
        tg.start_soon(receiver.serve, [receiver_socket])
        try:
            with anyio.fail_after(10):
                while not (sim.started and receiver.started):  # noqa: ASYNC110 - uvicorn offers no event
                    await anyio.sleep(0.01)
            events = Path(settings.sinks[0].removeprefix("file://"))
            event = await _edit_and_wait(receiver_url, events, progress)
        except Exception as exc:  # raised below, outside the task group, so it is not wrapped
            failure = exc
        finally:
            sim.should_exit = receiver.should_exit = True
    if failure is not None:
        raise failure
    return _report(event, out)


async def _edit_and_wait(receiver_url: str, events: Path, progress: Progress) -> dict[str, Any]:
    image = resources.files("receiver").joinpath("assets/car.jpg").read_bytes()
    async with httpx.AsyncClient(base_url=receiver_url, timeout=30) as client:
        response = await client.post(
            "/v1/edits",
            json={
                "prompt": PROMPT,
                "image": base64.b64encode(image).decode(),
                "metadata": {"source": "demo"},
            },
        )
        if response.status_code != 202:
            raise ReceiverError(f"the receiver refused the edit: {response.status_code} {response.text}")
        job_id = response.json()["id"]
        progress.update(f"job {job_id}: created")
        seen = (await anyio.Path(events).stat()).st_size if await anyio.Path(events).exists() else 0
        with anyio.fail_after(TIMEOUT_S):
            while True:
                event, seen = _find_event(events, job_id, seen)
                if event is not None:
                    progress.done(f"job {job_id}: {event['type']}")
                    return event
                state = (await client.get(f"/v1/jobs/{job_id}")).json()["state"]
                progress.update(f"job {job_id}: {state}, waiting for its event")
                await anyio.sleep(0.2)


def _find_event(events: Path, job_id: str, offset: int) -> tuple[dict[str, Any] | None, int]:
    """Scan the sink file from `offset` for the job's event; return it and the new offset."""
    if not events.exists():
        return None, offset
    with events.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            event = json.loads(line)
            if event.get("id") == job_id:
                return event, offset
    return None, offset


def _report(event: dict[str, Any], out: TextIO) -> int:
    out.write(json.dumps(event, indent=2) + "\n")
    image = event["data"]["image"]
    if event["type"] != "kontext.edit.completed" or image is None:
        out.write(f"the edit did not complete: {event['data']['error']}\n")
        return 1
    path = Path(image["url"].removeprefix("file://"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != image["sha256"]:
        out.write(f"stored image {path} does not match the event's sha256\n")
        return 1
    out.write(f"\nedited image: {path} ({image['width']}x{image['height']}, sha256 verified)\n")
    return 0


def _listen() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def _url(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _server(app: ASGIApp) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
