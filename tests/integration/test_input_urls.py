"""Input images given by URL, downloaded by the receiver before its 202: real servers on loopback. The
image host on 127.0.0.1 is named in RECEIVER_INPUT_HOSTS; the trap on 127.0.0.2 is not, and must never
be asked, directly or through a redirect."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.images import encode_image
from tests.integration.stack import FAST_SIM, IMAGE_B64, Stack, stack
from tests.integration.test_metrics import scrape, value
from tests.servers import free_port, serve

CAR = encode_image("PNG", (120, 80))
JACKET = encode_image("JPEG", (64, 64))
ONE_SHOT_TIMEOUT_S = 1.0
GZIP = {"Content-Encoding": "gzip"}  # sent although the receiver asks for the body as it is


@dataclass
class Host:
    url: str
    requests: list[str] = field(default_factory=list)

    def asked(self, path: str) -> int:
        return self.requests.count(path)


def image_host(trap_url: str, release: threading.Event) -> Starlette:
    """Valid, oversized, non-image, encoded, failing, stalled, dripping and redirecting answers, each at
    its own path; the `gate/*` paths answer only once three of them are waiting at the same time."""
    waiting: list[str] = []
    gate_open = anyio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield CAR[:32]
        await anyio.to_thread.run_sync(release.wait, abandon_on_cancel=True)  # until the tests are over

    async def drip_body() -> AsyncIterator[bytes]:
        """A byte every 0.1 s, well within any read timeout: only the edit's deadline can end it."""
        yield CAR[:32]
        while not release.is_set():
            await anyio.sleep(0.1)
            yield b"\0"

    async def handle(request: Request) -> Response:
        path = request.url.path
        request.app.state.requests.append(path)
        if path.startswith("/gate/"):
            waiting.append(path)
            if len(waiting) == 3:
                gate_open.set()
            with anyio.fail_after(10):
                await gate_open.wait()
            return Response(CAR, media_type="image/png")
        if path == "/slow.png":
            return StreamingResponse(slow_body(), media_type="image/png")
        if path == "/drip.png":
            return StreamingResponse(drip_body(), media_type="image/png")
        if path == "/huge.png":  # streamed, with no Content-Length to refuse it by
            chunks = [b"\x89PNG\r\n\x1a\n", *([b"\0" * (1 << 20)] * 21)]
            return StreamingResponse(iter(chunks), media_type="image/png")
        redirects = {"/moved.png": "/car.png", "/to-trap.png": f"{trap_url}/car.png"}
        if path in redirects:
            return RedirectResponse(redirects[path], status_code=302)
        answers = {
            "/car.png": Response(CAR, media_type="image/png"),
            "/jacket.jpg": Response(JACKET, media_type="image/jpeg"),
            "/text.png": Response(b"<html>not an image</html>", media_type="image/png"),
            "/gzipped.png": Response(gzip.compress(CAR), media_type="image/png", headers=GZIP),
            "/bad-gzip.png": Response(b"\x1f\x8b not gzip at all", media_type="image/png", headers=GZIP),
            "/wide.png": Response(encode_image("PNG", (3000, 2000), "1"), media_type="image/png"),
            "/too-many-pixels.png": Response(encode_image("PNG", (5000, 4100), "1"), media_type="image/png"),
        }
        return answers.get(path, Response(b"no such image", status_code=404))

    app = Starlette(routes=[Route("/{path:path}", handle)])
    app.state.requests = []
    return app


@dataclass
class Hosts:
    images: Host
    trap: Host


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    release = threading.Event()
    trap_app = image_host("", release)
    with serve(trap_app, host="127.0.0.2") as trap_url:
        images_app = image_host(trap_url, release)
        with serve(images_app) as images_url:
            try:
                trap = Host(trap_url, trap_app.state.requests)
                yield Hosts(Host(images_url, images_app.state.requests), trap)
            finally:
                release.set()


@pytest.fixture
def running(tmp_path: Path, hosts: Hosts) -> Iterator[Stack]:
    hosts.images.requests.clear()
    sim = dataclasses.replace(FAST_SIM, flavor="live")
    named = ("127.0.0.1",)
    with stack(tmp_path, sim, input_hosts=named, input_fetch_timeout_s=ONE_SHOT_TIMEOUT_S) as running:
        yield running
    assert hosts.trap.requests == []  # never asked, by the receiver or by anyone it sent the URL to


def stored_files(running: Stack) -> list[str]:
    folder = running.data / "images"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def refused(running: Stack, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST the edit; expect a 422 that changed nothing: no job, no stored image, nothing sent to BFL."""
    response = running.post_edit({"prompt": "Change the car color to red"} | body)
    assert response.status_code == 422, response.text
    assert running.jobs() == [] and stored_files(running) == []
    assert running.sim("/_sim/stats")["submits"] == 0
    detail: list[dict[str, Any]] = response.json()["detail"]
    return detail


def test_an_edit_mixing_base64_and_urls_reaches_bfl_as_base64_only(running: Stack, hosts: Hosts) -> None:
    images = hosts.images.url
    given = [IMAGE_B64, f"{images}/moved.png", f"{images}/jacket.jpg"]
    job = running.submit(image=None, model="flux-2-pro", images=given)
    sent = [base64.b64decode(IMAGE_B64), CAR, JACKET]
    inputs = job["inputs"]
    assert [item["sha256"] for item in inputs] == [hashlib.sha256(data).hexdigest() for data in sent]
    assert [item["source_url"] for item in inputs] == [None, f"{images}/moved.png", f"{images}/jacket.jpg"]
    assert [(item["content_type"], item["width"]) for item in inputs] == [
        ("image/jpeg", 96),
        ("image/png", 120),
        ("image/jpeg", 64),
    ]
    assert running.client.get(inputs[1]["url"]).content == CAR
    event = running.wait_event(job["id"])
    assert event["type"] == "kontext.edit.completed"
    task = running.sim(f"/_sim/tasks/{event['data']['bfl_task_id']}")
    # BFL got the very bytes the receiver stored, and never a URL: the image host was asked once per
    # URL (the redirect included), by the receiver, and the simulator fetched nothing.
    assert [item["sha256"] for item in task["inputs"]] == [item["sha256"] for item in inputs]
    assert sorted(hosts.images.requests) == ["/car.png", "/jacket.jpg", "/moved.png"]  # fetched at once
    assert running.job(job["id"])["inputs"][2]["source_url"] == f"{images}/jacket.jpg"


def test_image_url_is_stored_and_shown_with_where_it_came_from(running: Stack, hosts: Hosts) -> None:
    url = f"{hosts.images.url}/car.png"
    job = running.submit(image=None, image_url=url)
    [stored] = job["inputs"]
    assert stored["source_url"] == url and stored["bytes"] == len(CAR)
    assert stored_files(running) == [f"{job['id']}.input-0.png"]
    assert running.wait_event(job["id"])["type"] == "kontext.edit.completed"


def test_the_source_url_is_kept_without_its_credentials(running: Stack, hosts: Hosts) -> None:
    """A presigned URL's query string is a credential, as userinfo is: used to download, never kept."""
    host = hosts.images.url.removeprefix("http://")
    url = f"http://reader:hunter2@{host}/car.png?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=5ec12e7"
    job = running.submit(image=None, image_url=url)
    assert job["inputs"][0]["source_url"] == f"http://***@{host}/car.png?***"
    assert hosts.images.asked("/car.png") == 1
    shown = running.client.get(f"/v1/jobs/{job['id']}").text
    kept = b"".join(path.read_bytes() for path in running.data.rglob("*") if path.is_file())
    assert job["id"].encode() in kept  # the store is among what is read
    for secret in ("hunter2", "AKIAEXAMPLE", "5ec12e7"):
        assert secret not in shown and secret.encode() not in kept


def test_several_urls_of_one_edit_are_downloaded_at_once(running: Stack, hosts: Hosts) -> None:
    """The gate answers only while all three are waiting together: one after another would time out."""
    images = [f"{hosts.images.url}/gate/{n}.png" for n in range(3)]
    job = running.submit(image=None, model="flux-2-flex", images=images)
    assert [item["source_url"] for item in job["inputs"]] == images


@pytest.mark.parametrize(
    ("path", "kind", "says"),
    [
        ("/missing.png", "url_fetch_failed", "the image URL answered 404"),
        ("/text.png", "image_invalid", "input image is not a JPEG, PNG or WebP image"),
        ("/gzipped.png", "image_invalid", "input image is sent encoded (Content-Encoding: gzip)"),
        ("/bad-gzip.png", "image_invalid", "input image is sent encoded (Content-Encoding: gzip)"),
        ("/huge.png", "image_invalid", "input image is over the 20971520-byte cap"),
        ("/too-many-pixels.png", "image_invalid", "input image is 5000x4100, over the 20000000-pixel cap"),
        ("/slow.png", "url_fetch_failed", f"did not finish within {ONE_SHOT_TIMEOUT_S:g} s"),
        ("/drip.png", "url_fetch_failed", f"did not finish within {ONE_SHOT_TIMEOUT_S:g} s"),
    ],
)
def test_a_url_that_gives_no_acceptable_image_is_a_422_naming_the_field(
    running: Stack, hosts: Hosts, path: str, kind: str, says: str
) -> None:
    images = [IMAGE_B64, f"{hosts.images.url}/car.png", f"{hosts.images.url}{path}"]
    [problem] = refused(running, {"model": "flux-2-flex", "images": images})
    assert problem["loc"] == ["body", "images", 2] and problem["type"] == kind
    assert says in problem["msg"]


def test_a_refused_connection_is_a_422_naming_the_field(running: Stack) -> None:
    [problem] = refused(running, {"image_url": f"http://127.0.0.1:{free_port()}/car.png"})
    assert problem["loc"] == ["body", "image_url"] and problem["type"] == "url_fetch_failed"
    assert "ConnectError" in problem["msg"]


def test_a_host_not_allowed_is_refused_before_anything_is_downloaded(running: Stack, hosts: Hosts) -> None:
    images = [f"{hosts.images.url}/car.png", f"{hosts.trap.url}/car.png"]
    [problem] = refused(running, {"model": "flux-2-flex", "images": images})
    assert problem["loc"] == ["body", "images", 1] and problem["type"] == "url_not_allowed"
    assert "127.0.0.2" in problem["msg"] and "RECEIVER_INPUT_HOSTS" in problem["msg"]
    assert hosts.images.requests == []  # refused up front: not even the allowed URL was fetched


def test_a_redirect_to_a_host_not_allowed_is_not_followed(running: Stack, hosts: Hosts) -> None:
    [problem] = refused(running, {"image_url": f"{hosts.images.url}/to-trap.png"})
    assert problem["loc"] == ["body", "image_url"] and problem["type"] == "url_not_allowed"
    assert "input image host 127.0.0.2" in problem["msg"]


def test_the_input_megapixels_of_the_model_count_the_downloaded_images(running: Stack, hosts: Hosts) -> None:
    """flux-2-pro takes 9 MP of input images together; two 6 MP images are over it."""
    images = [f"{hosts.images.url}/wide.png", f"{hosts.images.url}/wide.png"]
    [problem] = refused(running, {"model": "flux-2-pro", "images": images})
    assert problem["loc"] == ["body", "images"] and problem["type"] == "input_too_large"


def test_a_replay_is_answered_without_downloading_again(running: Stack, hosts: Hosts) -> None:
    body = {"prompt": "Change the car color to red", "image_url": f"{hosts.images.url}/car.png"}
    first = running.post_edit(body, {"Idempotency-Key": "order-9"})
    replay = running.post_edit(body, {"Idempotency-Key": "order-9"})
    assert first.status_code == replay.status_code == 202
    assert replay.json()["id"] == first.json()["id"] and replay.headers["idempotent-replayed"] == "true"
    other = running.post_edit(body | {"seed": 1}, {"Idempotency-Key": "order-9"})
    assert other.status_code == 409
    assert hosts.images.asked("/car.png") == 1
    assert len(running.jobs()) == 1 and stored_files(running) == [f"{first.json()['id']}.input-0.png"]


def test_each_url_input_is_counted_by_outcome(running: Stack, hosts: Hosts) -> None:
    images = hosts.images.url
    # The jacket is stored, then discarded with its edit: it still counts as stored.
    refused(running, {"model": "flux-2-flex", "images": [f"{images}/jacket.jpg", f"{images}/text.png"]})
    refused(running, {"image_url": f"{images}/missing.png"})
    refused(running, {"image_url": f"{images}/to-trap.png"})
    refused(running, {"image_url": f"{hosts.trap.url}/car.png"})
    running.submit(
        image=None, model="flux-2-flex", images=[IMAGE_B64, f"{images}/car.png", f"{images}/moved.png"]
    )
    samples = scrape(running.url)
    counted = {
        outcome: value(samples, "input_downloads_total", outcome=outcome)
        for outcome in ("stored", "invalid", "failed", "refused")
    }
    assert counted == {"stored": 3, "invalid": 1, "failed": 1, "refused": 2}
    assert value(samples, "input_download_bytes_count") == 3
    assert value(samples, "input_download_bytes_sum") == 2 * len(CAR) + len(JACKET)


def test_urls_are_refused_when_input_hosts_is_empty(tmp_path: Path, hosts: Hosts) -> None:
    hosts.images.requests.clear()
    with stack(tmp_path, input_hosts=()) as running:
        [problem] = refused(running, {"image_url": f"{hosts.images.url}/car.png"})
    assert problem["type"] == "url_not_allowed" and "RECEIVER_INPUT_HOSTS is empty" in problem["msg"]
    assert hosts.images.requests == []
