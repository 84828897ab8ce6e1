"""The whole path with real servers: simulator and receiver under uvicorn on loopback ports."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from structlog.testing import capture_logs

from receiver import lifecycle
from receiver.models import EditRequest
from receiver.simulator import create_sim_app
from receiver.stores.sqlite import SQLiteStore
from receiver.webhook_auth import WebhookSigner
from tests.images import encode_image
from tests.integration.stack import FAST_SIM, IMAGE_B64, SIM_KEY, Stack, receiver, stack
from tests.servers import free_port, serve, wait_until


def assert_completed(running: Stack, event: dict[str, object], via: str = "webhook") -> None:
    """The event is a completed CloudEvent whose stored image is the exact bytes BFL served."""
    assert event["type"] == "kontext.edit.completed"
    data = event["data"]
    assert isinstance(data, dict)
    assert data["outcome"] == "completed" and data["via"] == via and data["error"] is None
    image = data["image"]
    stored = Path(image["url"].removeprefix("file://")).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == image["sha256"] and len(stored) == image["bytes"]
    assert event["dataref"] == image["url"]
    served = running.sim(f"/_sim/tasks/{data['bfl_task_id']}")
    assert served["sha256"] == image["sha256"]


def assert_published(running: Stack, event: dict[str, Any]) -> None:
    """The job says when every sink had its event, and its other timings are the event's."""
    job_id = event["id"]
    wait_until(lambda: running.job(job_id)["timings"]["published_at"] is not None, 10, "published_at")
    timings, emitted = running.job(job_id)["timings"], event["data"]["timings"]
    for step in ("submitted_at", "bfl_finished_at", "received_at", "stored_at"):
        assert timings[step] == emitted[step], step
    assert timings["finished_at"] == emitted["published_at"] <= timings["published_at"]


@pytest.mark.parametrize(
    ("shape", "flavor"), [("observed", "seed"), ("documented", "seed"), ("observed", "live")]
)
def test_edit_completes_through_the_webhook(tmp_path: Path, shape: str, flavor: str) -> None:
    sim = dataclasses.replace(FAST_SIM, webhook_shape=shape, flavor=flavor)
    with stack(tmp_path, sim) as running:
        job = running.submit(metadata={"order": 42})
        assert job["state"] == "created"
        event = running.wait_event(job["id"])
        assert_completed(running, event)
        assert event["specversion"] == "1.0" and event["subject"] == job["id"]
        assert event["source"] == running.settings.public_url
        assert event["data"]["metadata"] == {"order": 42}
        assert running.wait_state(job["id"], "published")["outcome"] == "completed"
        assert_published(running, event)
        image = running.client.get(f"/v1/jobs/{job['id']}/image")
        assert hashlib.sha256(image.content).hexdigest() == event["data"]["image"]["sha256"]
        assert running.sim("/_sim/stats")["get_result"] == 0  # no polling while webhooks arrive


def test_duplicate_webhooks_produce_one_event_each(tmp_path: Path) -> None:
    sim = dataclasses.replace(FAST_SIM, webhook_duplicate_rate=1.0)
    with stack(tmp_path, sim) as running:
        ids = [running.submit()["id"] for _ in range(4)]
        for job_id in ids:
            running.wait_event(job_id)
        wait_until(lambda: running.sim("/_sim/stats")["webhooks_sent"] >= 8, 10, "every duplicate to arrive")
        replay = running.job(ids[0])
        assert replay["state"] in {"stored", "published"}
        events = running.events()
        assert sorted(e["id"] for e in events) == sorted(ids)


def test_replayed_webhook_is_acknowledged_and_ignored(tmp_path: Path) -> None:
    with stack(tmp_path) as running:
        job_id = running.submit()["id"]
        event = running.wait_event(job_id)
        body = {"task_id": event["data"]["bfl_task_id"], "status": "Error", "error": "late and wrong"}
        answer = running.webhook(job_id, body)
        assert answer.status_code == 200 and answer.json()["status"] == "duplicate"
        assert running.job(job_id)["outcome"] == "completed"
        assert [e["id"] for e in running.events()] == [job_id]


MODERATING_SIM = dataclasses.replace(FAST_SIM, moderate_words=("weapon",), content_moderate_words=("gore",))


@pytest.mark.parametrize(
    ("prompt", "status"),
    [("Add a weapon to the car", "Request Moderated"), ("Add gore to the car", "Content Moderated")],
)
def test_moderated_edit_publishes_without_image(tmp_path: Path, prompt: str, status: str) -> None:
    with stack(tmp_path, MODERATING_SIM) as running:
        job_id = running.submit(prompt=prompt)["id"]
        event = running.wait_event(job_id)
        assert event["type"] == "kontext.edit.moderated"
        assert event["data"]["image"] is None and "dataref" not in event
        assert event["data"]["error"]["status"] == status
        assert running.job(job_id)["state"] == "moderated"
        assert_published(running, event)


def test_failed_edit_publishes_the_upstream_error(tmp_path: Path) -> None:
    with stack(tmp_path, dataclasses.replace(FAST_SIM, error_rate=1.0)) as running:
        job_id = running.submit()["id"]
        event = running.wait_event(job_id)
        assert event["type"] == "kontext.edit.failed"
        assert event["data"]["image"] is None and event["data"]["error"]["code"] == "upstream_error"
        assert_published(running, event)


def test_expired_sample_url_ends_the_job_cleanly(tmp_path: Path) -> None:
    """Every URL BFL hands out is dead on arrival: fresh ones are asked for until the give-up deadline."""
    with stack(tmp_path, dataclasses.replace(FAST_SIM, url_ttl_s=0.0), give_up_after_s=1.5) as running:
        job_id = running.submit()["id"]
        event = running.wait_event(job_id)
        assert event["type"] == "kontext.edit.expired"
        assert event["data"]["image"] is None and event["data"]["error"]["code"] == "download_failed"
        assert running.sim("/_sim/stats")["get_result"] >= 2  # fresh URLs were asked for, with backoff
        # Nothing half-written left behind: only the input image is there.
        assert [p.name for p in (tmp_path / "images").iterdir()] == [f"{job_id}.input-0.jpg"]
        assert running.client.get(f"/v1/jobs/{job_id}/image").status_code == 404
        assert_published(running, event)


def test_lost_webhook_is_recovered_by_polling(tmp_path: Path) -> None:
    sim = dataclasses.replace(FAST_SIM, webhook_drop_rate=1.0)
    with stack(tmp_path, sim, reconcile_after_s=0.2) as running:
        job_id = running.submit()["id"]
        event = running.wait_event(job_id)
        assert_completed(running, event, via="poll")


def test_rotated_keys_still_verify_jobs_in_flight(tmp_path: Path) -> None:
    """A job submitted under the old key completes on a receiver restarted with a new first key."""
    sim = dataclasses.replace(FAST_SIM, webhook_delay_s=1.0)
    port = free_port()
    with serve(create_sim_app(sim)) as sim_url:
        with receiver(tmp_path, sim_url, port=port, signing_keys=("old-signing-key-0001",)) as first:
            job_id = first.submit()["id"]
            first.wait_state(job_id, "submitted")
        with receiver(
            tmp_path, sim_url, port=port, signing_keys=("new-signing-key-0001", "old-signing-key-0001")
        ) as second:
            assert_completed(second, second.wait_event(job_id))
            new_job = second.submit()["id"]
            second.wait_event(new_job)
            assert WebhookSigner(["new-signing-key-0001"]).verify(new_job, second.secret(new_job))
            retired = WebhookSigner(["retired-key"]).secret_for(new_job)
            assert (
                second.webhook(new_job, {"task_id": "x", "status": "SUCCESS"}, secret=retired).status_code
                == 401
            )


def test_idempotency_key_returns_the_same_job(tmp_path: Path) -> None:
    with stack(tmp_path) as running:
        first = running.submit(headers={"Idempotency-Key": "order-42"})
        again = running.post_edit(
            {"prompt": "Change the car color to red", "image": IMAGE_B64}, {"Idempotency-Key": "order-42"}
        )
        assert again.status_code == 202 and again.json()["id"] == first["id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        # The same request serialised afresh (other key order, other spacing) is a replay too.
        reserialised = json.dumps({"image": IMAGE_B64, "prompt": "Change the car color to red"}, indent=2)
        retry = running.client.post(
            "/v1/edits",
            content=reserialised,
            headers={"Idempotency-Key": "order-42", "Content-Type": "application/json"},
        )
        assert retry.status_code == 202 and retry.json()["id"] == first["id"], retry.text
        clash = running.post_edit(
            {"prompt": "Something else", "image": IMAGE_B64}, {"Idempotency-Key": "order-42"}
        )
        assert clash.status_code == 409 and "different request" in clash.text
        running.wait_event(first["id"])
        assert len(running.jobs()) == 1 and running.sim("/_sim/stats")["submits"] == 1


def test_queue_keeps_upstream_under_its_active_limits(tmp_path: Path) -> None:
    """More edits than BFL allows active (8 here; 6 for kontext-max) all complete without one 429."""
    sim = dataclasses.replace(FAST_SIM, max_active=8, latency_s=0.2)
    with stack(tmp_path, sim, max_active=8) as running:
        models = ["flux-kontext-max"] * 10 + ["flux-kontext-pro"] * 6
        ids = [running.submit(model=model)["id"] for model in models]
        for job_id in ids:
            assert running.wait_event(job_id, timeout=30)["type"] == "kontext.edit.completed"
        assert running.sim("/_sim/stats")["rejected"] == 0


def test_upstream_429_is_retried_until_accepted(tmp_path: Path) -> None:
    sim = dataclasses.replace(FAST_SIM, max_active=1, latency_s=0.1)
    with stack(tmp_path, sim, max_active=4) as running:
        ids = [running.submit()["id"] for _ in range(4)]
        for job_id in ids:
            assert running.wait_event(job_id, timeout=30)["type"] == "kontext.edit.completed"
        assert running.sim("/_sim/stats")["rejected"] > 0


def test_upstream_402_fails_the_job_with_the_reason(tmp_path: Path) -> None:
    with stack(tmp_path, dataclasses.replace(FAST_SIM, credits=0.0)) as running:
        job_id = running.submit()["id"]
        event = running.wait_event(job_id)
        assert event["type"] == "kontext.edit.failed"
        assert (
            event["data"]["error"]["status"] == 402 and "credits" in event["data"]["error"]["message"].lower()
        )


def test_a_malformed_api_key_fails_the_job_saying_so_and_is_never_logged(tmp_path: Path) -> None:
    malformed = f'"{SIM_KEY}"'  # quoted in an env file: no BFL key has quotes
    live = dataclasses.replace(FAST_SIM, flavor="live")
    with (
        capture_logs() as logs,
        stack(tmp_path, live, bfl_api_key=malformed) as running,
    ):
        job_id = running.submit()["id"]
        event = running.wait_event(job_id)
        stats = running.sim("/_sim/stats")
    error = event["data"]["error"]
    assert event["type"] == "kontext.edit.failed" and error["status"] == 422
    assert "API key is malformed (Invalid API key format): check BFL_API_KEY" in error["message"]
    assert (stats["submits"], stats["rejected"]) == (0, 1)  # refused once: not retried
    [refused] = [entry for entry in logs if entry["event"] == "job.submit_refused"]
    assert refused["status"] == 422 and "malformed" in refused["detail"]
    assert SIM_KEY not in repr(logs)


def image_files() -> Starlette:
    """Serves a PNG at /car.png, and counts the requests it gets."""
    png = encode_image("PNG")

    async def car(request: Request) -> Response:
        request.app.state.asked += 1
        return Response(png, media_type="image/png")

    files = Starlette(routes=[Route("/car.png", car)])
    files.state.asked = 0
    return files


@pytest.mark.parametrize("flavor", ["seed", "live"])
def test_an_image_by_url_is_downloaded_by_the_receiver_not_by_bfl(tmp_path: Path, flavor: str) -> None:
    files = image_files()
    sim = dataclasses.replace(FAST_SIM, flavor=flavor)
    with serve(files) as files_url, stack(tmp_path, sim, input_hosts=("127.0.0.1",)) as running:
        good = running.submit(image=None, image_url=f"{files_url}/car.png")
        assert_completed(running, running.wait_event(good["id"]))
        assert files.state.asked == 1  # by the receiver, before its 202
        bad = running.post_edit({"prompt": "p", "image_url": f"{files_url}/missing.png"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "image_url"]
        assert running.sim("/_sim/stats")["submits"] == 1


def test_health_metrics_and_openapi(tmp_path: Path) -> None:
    with stack(tmp_path) as running:
        running.wait_event(running.submit()["id"])
        assert httpx.get(f"{running.url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{running.url}/readyz").status_code == 200
        metrics = httpx.get(f"{running.url}/metrics").text
        assert 'kontext_receiver_webhooks_total{outcome="accepted"} 1.0' in metrics
        spec = httpx.get(f"{running.url}/openapi.json").json()
        assert "/v1/edits" in spec["paths"] and "/webhooks/bfl/{job_id}" in spec["paths"]


def test_expired_urls_are_replaced_through_get_result(tmp_path: Path) -> None:
    """Half of all signed URLs are dead on arrival: fresh ones come from get_result, every edit lands."""
    sim = dataclasses.replace(FAST_SIM, url_early_expire_rate=0.5)
    with stack(tmp_path, sim) as running:
        ids = [running.submit()["id"] for _ in range(8)]
        for job_id in ids:
            assert_completed(running, running.wait_event(job_id))
        stats = running.sim("/_sim/stats")
        assert stats["urls_expired_early"] > 0 and stats["get_result"] >= 1


def test_lost_webhooks_are_recovered_while_get_result_fails_for_a_while(tmp_path: Path) -> None:
    # The outage runs from the simulator's start: long enough that the first polls fall into it even
    # when a loaded machine takes a while to start the receiver.
    sim = dataclasses.replace(FAST_SIM, webhook_drop_rate=1.0, get_result_error_s=4.0)
    with stack(tmp_path, sim, reconcile_after_s=0.1) as running:
        job_id = running.submit()["id"]
        assert_completed(running, running.wait_event(job_id), via="poll")
        assert running.sim("/_sim/stats")["get_result_errors"] > 0  # polled through the outage


def test_truncated_downloads_are_retried_and_never_stored(tmp_path: Path) -> None:
    sim = dataclasses.replace(FAST_SIM, download_truncate_rate=0.5)
    with stack(tmp_path, sim) as running:
        ids = [running.submit()["id"] for _ in range(6)]
        for job_id in ids:
            assert_completed(running, running.wait_event(job_id))  # the stored bytes are the full image
        assert running.sim("/_sim/stats")["downloads_truncated"] > 0


def test_the_input_image_is_kept_beside_the_result_and_served(tmp_path: Path) -> None:
    with stack(tmp_path) as running:
        job = running.submit(headers={"Idempotency-Key": "order-7"})
        replay = running.post_edit(
            {"prompt": "Change the car color to red", "image": IMAGE_B64}, {"Idempotency-Key": "order-7"}
        )
        assert replay.json()["id"] == job["id"]
        sent = base64.b64decode(IMAGE_B64)
        [stored] = job["inputs"]
        assert stored["sha256"] == hashlib.sha256(sent).hexdigest() and stored["bytes"] == len(sent)
        assert (stored["content_type"], stored["width"], stored["height"]) == ("image/jpeg", 96, 64)
        served = running.client.get(stored["url"])
        assert served.status_code == 200 and served.content == sent
        assert served.headers["content-type"] == "image/jpeg"
        assert served.headers["etag"] == f'"{stored["sha256"]}"'
        assert running.client.get(f"/v1/jobs/{job['id']}/input").content == sent
        event = running.wait_event(job["id"])
        assert_completed(running, event)
        # The replay was answered from the job its key names, and wrote no image: one input, one result.
        result = Path(event["data"]["image"]["url"].removeprefix("file://")).name
        assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
            f"{job['id']}.input-0.jpg",
            result,
        ]
        assert running.client.get(f"/v1/jobs/{job['id']}/input", params={"index": 1}).status_code == 404


def test_a_job_accepted_before_inputs_were_downloaded_still_sends_its_url(tmp_path: Path) -> None:
    """An older version passed an `image_url` on to BFL and stored nothing: such a job, still queued in
    the database, is submitted with its URL, and has no input to serve."""
    files = image_files()
    with serve(files) as files_url:
        request = EditRequest("Change the car color to red", image_url=f"{files_url}/car.png")
        job = lifecycle.new_job("job-old", request, time.time())

        async def queue_it() -> None:
            async with SQLiteStore(str(tmp_path / "receiver.db")) as store:
                await store.insert(job)

        anyio.run(queue_it)
        with stack(tmp_path) as running:
            assert_completed(running, running.wait_event(job.id))
            assert files.state.asked == 1  # by the simulator, as BFL would
            assert running.job(job.id)["inputs"] == []
            missing = running.client.get(f"/v1/jobs/{job.id}/input")
            assert missing.status_code == 404 and "no stored input" in missing.text


def test_an_input_image_changed_in_storage_fails_its_job_instead_of_being_sent(tmp_path: Path) -> None:
    """The digest kept in the job row is checked when the image is read back for BFL."""
    sim = dataclasses.replace(FAST_SIM, webhook_drop_rate=1.0)
    with stack(tmp_path, sim, max_active=1, reconcile_after_s=3600.0) as running:
        first = running.submit()["id"]
        task_id = running.wait_state(first, "submitted")["bfl_task_id"]
        second = running.submit()  # waits: the one upstream slot is taken by the first
        (tmp_path / "images" / f"{second['id']}.input-0.jpg").write_bytes(b"\xff\xd8\xff not that image")
        freed = running.webhook(first, {"task_id": task_id, "status": "Error", "error": "freed"})
        assert freed.status_code == 200
        event = running.wait_event(second["id"])
        assert event["type"] == "kontext.edit.failed"
        assert event["data"]["error"]["code"] == "input_unavailable"
        assert "does not match its sha256" in event["data"]["error"]["message"]
        assert running.sim("/_sim/stats")["submits"] == 1
