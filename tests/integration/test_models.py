"""Every catalog model end to end: multi-reference edits, per-model limits, costs and the daily credit
cap, and a model that sends no webhooks; against the simulator in both of its flavours."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from receiver.catalog import CATALOG
from tests.images import base64_image, encode_image
from tests.integration.stack import FAST_SIM, Stack, stack
from tests.servers import serve, wait_until

FLAVORS = ["seed", "live"]


def references(count: int) -> list[str]:
    """`count` distinct images: the one to edit first, then its references."""
    return [base64_image("JPEG", (96 + 16 * n, 64)) for n in range(count)]


def sha256_of(image: str) -> str:
    return hashlib.sha256(base64.b64decode(image)).hexdigest()


def seen_by_bfl(running: Stack, event: dict[str, Any]) -> list[str]:
    task = running.sim(f"/_sim/tasks/{event['data']['bfl_task_id']}")
    return [image["sha256"] for image in task["inputs"]]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_multi_reference_edits_reach_bfl_with_every_image_in_order(tmp_path: Path, flavor: str) -> None:
    ref_png = encode_image("PNG", (80, 80))
    files = Starlette(routes=[Route("/ref.png", lambda request: Response(ref_png, media_type="image/png"))])
    sim = dataclasses.replace(FAST_SIM, flavor=flavor)
    with stack(tmp_path, sim, input_hosts=("127.0.0.1",)) as running, serve(files) as files_url:
        kontext_images = references(4)  # the image to edit and 3 references: Kontext's limit
        flex_images = [*references(6), f"{files_url}/ref.png"]  # 6 inline references and one by URL
        kontext = running.submit(image=None, images=kontext_images, model="flux-kontext-max")
        flex = running.submit(image=None, images=flex_images, model="flux-2-flex", steps=20, guidance=4.0)

        kontext_event = running.wait_event(kontext["id"])
        flex_event = running.wait_event(flex["id"])

        assert kontext_event["type"] == flex_event["type"] == "kontext.edit.completed"
        assert seen_by_bfl(running, kontext_event) == [sha256_of(image) for image in kontext_images]
        assert seen_by_bfl(running, flex_event) == [
            *(sha256_of(image) for image in flex_images[:6]),
            hashlib.sha256(ref_png).hexdigest(),
        ]
        # Every image is stored beside the result, the one by URL too (downloaded by the receiver).
        assert [item["sha256"] for item in running.job(flex["id"])["inputs"]] == [
            *(sha256_of(image) for image in flex_images[:6]),
            hashlib.sha256(ref_png).hexdigest(),
        ]
        cost = flex_event["data"]["cost"]
        assert cost["credits"] == CATALOG["flux-2-flex"].credits(cost["input_mp"], cost["output_mp"])
        assert kontext_event["data"]["cost"]["credits"] == 8.0
        assert kontext_event["data"]["model"] == "flux-kontext-max"


@pytest.mark.parametrize(
    ("fields", "loc", "kind"),
    [
        pytest.param(
            {"model": "flux-kontext-max", "images": references(5)},
            ["body", "images"],
            "too_many_images",
            id="kontext-5-images",
        ),
        pytest.param(
            {"model": "flux-2-flex", "images": references(9)},
            ["body", "images"],
            "too_many_images",
            id="flex-9-images",
        ),
        pytest.param(
            {"model": "flux-2-klein-4b", "images": references(5)},
            ["body", "images"],
            "too_many_images",
            id="klein-5-images",
        ),
        pytest.param({"model": "flux-2-pro", "steps": 20}, ["body", "steps"], "model_field", id="pro-steps"),
        pytest.param(
            {"model": "flux-kontext-pro", "width": 1024}, ["body", "width"], "model_field", id="kontext-width"
        ),
        pytest.param(
            {"model": "flux-2-max", "aspect_ratio": "16:9"},
            ["body", "aspect_ratio"],
            "model_field",
            id="flux2-aspect-ratio",
        ),
        pytest.param(
            {"model": "flux-2-flex", "guidance": 12},
            ["body", "guidance"],
            "less_than_equal",
            id="flex-guidance",
        ),
        pytest.param({"model": "flux-2-pro", "width": 1000}, ["body", "width"], "side", id="width-not-16"),
        pytest.param(
            {"model": "flux-2-pro", "safety_tolerance": 6},
            ["body", "safety_tolerance"],
            "less_than_equal",
            id="flux2-safety-6",
        ),
        pytest.param({"model": "flux-3-video"}, ["body", "model"], "enum", id="unknown-model"),
        pytest.param({"images": "not a list"}, ["body", "images"], "list_type", id="images-not-a-list"),
        pytest.param(
            {"images": references(1), "image_url": "https://images.example/a.png"},
            ["body", "images"],
            "extra_forbidden",
            id="two-image-forms",
        ),
    ],
)
def test_what_a_model_does_not_take_is_refused_with_422_before_anything_is_sent(
    tmp_path: Path, fields: dict[str, Any], loc: list[Any], kind: str
) -> None:
    with stack(tmp_path) as running:
        body = {"prompt": "Change the car color to red"} | fields
        if "images" not in fields:
            body["image"] = references(1)[0]

        response = running.post_edit(body)

        assert response.status_code == 422, response.text
        assert [(p["loc"], p["type"]) for p in response.json()["detail"]] == [(loc, kind)]
        assert running.jobs() == []
        assert running.sim("/_sim/stats")["submits"] == 0
        assert not (tmp_path / "images").exists() or not any((tmp_path / "images").iterdir())


class ShiftedClock:
    """The wall clock moved to a chosen moment, and on by hand: the receiver's sense of the date."""

    def __init__(self, start: datetime) -> None:
        self.offset = start.timestamp() - datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return datetime.now(UTC).timestamp() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def test_the_credit_cap_holds_the_fourth_edit_until_midnight_utc(tmp_path: Path) -> None:
    clock = ShiftedClock(datetime(2030, 1, 1, 23, 58, tzinfo=UTC))
    # flux-kontext-pro costs 4 credits an edit: a cap of 12 allows 3 a day.
    with stack(tmp_path, clock=clock, max_credits_per_day=12.0) as running:
        first = [running.submit()["id"] for _ in range(3)]
        for job_id in first:
            assert running.wait_event(job_id)["data"]["cost"]["credits"] == 4.0

        fourth = running.submit()  # accepted, not refused
        wait_until(lambda: running.job(fourth["id"])["hold"] is not None, 10, "the fourth edit to be held")

        held = running.job(fourth["id"])
        assert held["state"] == "created" and held["hold"]["code"] == "credit_cap"
        assert held["hold"]["until"] == "2030-01-02T00:00:00.000Z"
        assert "RECEIVER_MAX_CREDITS_PER_DAY=12" in held["hold"]["message"]
        listed = {job["id"]: job for job in running.jobs()}
        assert listed[fourth["id"]]["hold"] == held["hold"]
        assert running.sim("/_sim/stats")["submits"] == 3

        clock.advance(180)  # 00:01 UTC the next day

        event = running.wait_event(fourth["id"])
        assert event["type"] == "kontext.edit.completed"
        assert running.job(fourth["id"])["hold"] is None
        assert running.sim("/_sim/stats")["submits"] == 4
        metrics = httpx.get(f"{running.url}/metrics").text
        assert 'kontext_receiver_credits_total{model="flux-kontext-pro",outcome="completed"} 16.0' in metrics


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_model_without_webhooks_is_followed_by_polling_with_one_event(tmp_path: Path, flavor: str) -> None:
    quiet = dataclasses.replace(CATALOG["flux-2-klein-4b"], name="flux-quiet-test", webhooks=False)
    catalog = CATALOG.with_models(quiet)
    sim = dataclasses.replace(FAST_SIM, flavor=flavor, latency_s=0.5)
    # The webhooks of the other models would be recovered only after an hour.
    with stack(tmp_path, sim, catalog=catalog, reconcile_after_s=3600.0, max_polls_per_s=5.0) as running:
        job_id = running.submit(model=quiet.name)["id"]

        event = running.wait_event(job_id)

        assert event["type"] == "kontext.edit.completed" and event["data"]["via"] == "poll"
        task = running.sim(f"/_sim/tasks/{event['data']['bfl_task_id']}")
        assert (task["webhook_url"], task["webhooks"]) == (None, [])
        assert task["get_result_calls"] >= 1
        assert [e["id"] for e in running.events()] == [job_id]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_a_lost_webhook_is_recovered_by_polling_in_either_flavour(tmp_path: Path, flavor: str) -> None:
    """The live flavour does not know a task submitted with a webhook for a moment: the first polls
    say `Task not found`, which so soon after submit is not an outcome."""
    sim = dataclasses.replace(FAST_SIM, flavor=flavor, webhook_drop_rate=1.0, not_found_window_s=2.0)
    with stack(tmp_path, sim, reconcile_after_s=0.1) as running:
        job_id = running.submit(model="flux-2-pro")["id"]

        event = running.wait_event(job_id)

        assert event["type"] == "kontext.edit.completed" and event["data"]["via"] == "poll"
        if flavor == "live":
            assert running.sim("/_sim/stats")["get_result"] >= 2  # not found at first, then found
