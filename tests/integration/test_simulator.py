"""The BFL simulator over real sockets: uvicorn on loopback, with a real webhook receiver beside it.

Lifecycle tests drive a fake clock; webhook tests run on the real clock with a short latency and wait
for arrivals with a deadline.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.settings import SimSettings
from receiver.simulator import create_sim_app
from receiver.simulator.state import SimState
from receiver.webhook_auth import body_signature
from tests.clock import FakeClock
from tests.images import base64_image, encode_image
from tests.servers import free_port, serve, wait_until

KEY = "test-key"
T0 = 1_700_000_000.0


IMAGE = base64_image()


@dataclass
class Sim:
    url: str
    state: SimState
    http: httpx.Client

    def submit(self, path: str = "/v1/flux-kontext-pro", key: str = KEY, **fields: Any) -> httpx.Response:
        body = {"prompt": "Change the car color to red", "input_image": IMAGE, **fields}
        return self.http.post(self.url + path, json=body, headers={"x-key": key})

    def task_id(self, **fields: Any) -> str:
        response = self.submit(**fields)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def get_result(self, task_id: str, path: str = "/v1/get_result") -> httpx.Response:
        return self.http.get(self.url + path, params={"id": task_id}, headers={"x-key": KEY})

    def poll(self, task_id: str, path: str = "/v1/get_result") -> dict[str, Any]:
        response = self.get_result(task_id, path)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def describe(self, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"{self.url}/_sim/tasks/{task_id}").json()
        return body

    def stats(self) -> dict[str, int]:
        body: dict[str, int] = self.http.get(f"{self.url}/_sim/stats").json()
        return body


@contextmanager
def simulator(
    clock: Callable[[], float] = time.time, transport: httpx.AsyncBaseTransport | None = None, **knobs: Any
) -> Iterator[Sim]:
    app = create_sim_app(replace(SimSettings(), **knobs), clock=clock, transport=transport)
    with serve(app) as url, httpx.Client(timeout=10) as http:
        yield Sim(url, app.state.sim, http)


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(T0)


SHARED_KNOBS: dict[str, Any] = {
    "api_keys": (KEY, "second-key"),
    "latency_s": 1.0,
    "url_ttl_s": 0.5,
    "task_ttl_s": 5.0,
    "max_active": 10_000,
    "max_active_kontext_max": 10_000,
}


@pytest.fixture(scope="module")
def sim(clock: FakeClock) -> Iterator[Sim]:
    """One simulator (seed flavour) for the tests that need no special knobs; each makes its own tasks."""
    with simulator(clock, **SHARED_KNOBS) as running:
        yield running


@pytest.fixture(scope="module")
def live(clock: FakeClock) -> Iterator[Sim]:
    """The same in the live flavour."""
    with simulator(clock, flavor="live", not_found_window_s=0.0, **SHARED_KNOBS) as running:
        yield running


# -- submit and poll ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/v1"])
@pytest.mark.parametrize("image_key", ["input_image", "image"])
def test_a_task_goes_from_pending_to_ready_with_a_downloadable_sample(
    sim: Sim, clock: FakeClock, prefix: str, image_key: str
) -> None:
    response = sim.http.post(
        f"{sim.url}{prefix}/flux-kontext-pro",
        json={"prompt": "Change the car color to red", image_key: IMAGE, "seed": 42},
        headers={"X-Key": KEY},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    task_id = body["id"]

    pending = sim.poll(task_id, f"{prefix}/get_result")
    clock.advance(1.0)
    ready = sim.poll(task_id, f"{prefix}/get_result")
    sample = sim.http.get(ready["result"]["sample"])

    assert uuid.UUID(task_id).version == 4
    assert body == {
        "id": task_id,
        "polling_url": f"{sim.url}/v1/get_result?id={task_id}",
        "cost": 4.0,
        "input_mp": 0.0,
        "output_mp": 1.06,
    }
    assert (pending["status"], pending["progress"], pending.get("result")) == ("Pending", 0.0, None)
    assert ready["status"] == "Ready"
    assert ready["result"]["seed"] == 42
    assert ready["result"]["prompt"] == "Change the car color to red"
    assert ready["result"]["sample"].startswith(f"{sim.url}/results/{task_id}/sample.jpeg?exp=")
    assert sample.status_code == 200
    assert sample.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(sample.content)).size == (1184, 896)  # 64x48 is 4:3
    described = sim.describe(task_id)
    assert (described["get_result_calls"], described["model"]) == (2, "flux-kontext-pro")
    assert described["sha256"] == hashlib.sha256(sample.content).hexdigest()


def test_kontext_max_costs_eight_credits(sim: Sim) -> None:
    response = sim.submit("/flux-kontext-max")

    assert response.status_code == 200
    assert response.json()["cost"] == 8.0
    assert sim.describe(response.json()["id"])["model"] == "flux-kontext-max"


def test_aspect_ratio_and_png_output_are_honoured(sim: Sim, clock: FakeClock) -> None:
    task_id = sim.task_id(aspect_ratio="21:9", output_format="png")
    clock.advance(1.0)

    sample = sim.http.get(sim.poll(task_id)["result"]["sample"])

    assert sample.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(sample.content))
    assert (picture.format, picture.size) == ("PNG", (1568, 672))


def test_the_same_input_prompt_and_seed_give_the_same_bytes(sim: Sim, clock: FakeClock) -> None:
    first, again, other = sim.task_id(seed=5), sim.task_id(seed=5), sim.task_id(seed=6)
    clock.advance(1.0)

    digests = [
        hashlib.sha256(sim.http.get(sim.poll(task_id)["result"]["sample"]).content).hexdigest()
        for task_id in (first, again, other)
    ]

    assert digests[0] == digests[1]
    assert digests[0] != digests[2]


def test_an_unknown_or_forgotten_task_is_404_in_the_seed_flavour(sim: Sim, clock: FakeClock) -> None:
    task_id = sim.task_id()
    clock.advance(1.0 + 5.0)

    for unknown in (task_id, str(uuid.uuid4())):
        response = sim.get_result(unknown)
        assert (response.status_code, response.json()) == (404, {"detail": "Task not found"})
    assert sim.http.get(f"{sim.url}/_sim/tasks/{task_id}").status_code == 404


def test_an_unknown_or_forgotten_task_is_task_not_found_with_200_in_the_live_flavour(
    live: Sim, clock: FakeClock
) -> None:
    task_id = live.task_id()
    clock.advance(1.0 + 5.0)

    assert live.poll(task_id)["status"] == "Task not found"
    assert live.poll(str(uuid.uuid4()))["status"] == "Task not found"


def test_get_result_without_an_id_is_404_in_the_seed_flavour_and_422_in_the_live_one(
    sim: Sim, live: Sim
) -> None:
    seed = sim.http.get(f"{sim.url}/v1/get_result", headers={"x-key": KEY})
    validated = live.http.get(f"{live.url}/v1/get_result", headers={"x-key": KEY})

    assert (seed.status_code, seed.json()) == (404, {"detail": "Task not found"})
    assert validated.status_code == 422
    assert validated.json() == {
        "detail": [{"loc": ["query", "id"], "msg": "Field required", "type": "missing"}]
    }


def test_an_unknown_model_path_is_a_json_404(sim: Sim, live: Sim) -> None:
    for running in (sim, live):
        response = running.submit("/v1/flux-9-ultra")
        assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})


def test_every_catalog_model_is_served_with_its_own_limits_and_credits(sim: Sim) -> None:
    references = {f"input_image_{n}": base64_image("JPEG", (100 + n, 100)) for n in range(2, 7)}

    flex = sim.submit("/v1/flux-2-flex", **references, steps=20, guidance=3.0, width=512, height=512)
    klein = sim.submit("/v1/flux-2-klein-4b", **references)  # takes 4: input_image_5.. are ignored
    too_wide = sim.submit("/v1/flux-2-pro", width=1000)

    assert flex.status_code == 200, flex.text
    described = sim.describe(flex.json()["id"])
    assert [(i["width"], i["height"]) for i in described["inputs"]] == [
        (64, 48),
        *((100 + n, 100) for n in range(2, 7)),
    ]
    assert described["output_size"] == [512, 512]
    assert flex.json()["cost"] == round(5.0 + 5.0 * flex.json()["input_mp"], 2)
    assert len(sim.describe(klein.json()["id"])["inputs"]) == 4
    assert too_wide.status_code == 400  # a size the seed spec knows nothing of: not a schema error


def test_the_live_flavour_answers_a_submit_with_a_webhook_without_a_polling_url(live: Sim) -> None:
    response = live.submit(webhook_url="http://127.0.0.2:9/hook", webhook_secret="s")

    body = response.json()
    assert set(body) == {"id", "status", "webhook_url", "cost", "input_mp", "output_mp"}
    assert (body["status"], body["webhook_url"]) == ("Pending", "http://127.0.0.2:9/hook")


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "loc", "kind"),
    [
        pytest.param({"prompt": None}, "prompt", "missing", id="missing prompt"),
        pytest.param({"prompt": "x" * 10_001}, "prompt", "string_too_long", id="prompt over 10000 chars"),
        pytest.param({"input_image": None}, "input_image", "missing", id="missing image"),
        pytest.param({"input_image": "not base64!"}, "input_image", "image_invalid", id="bad base64"),
        pytest.param(
            {"input_image": base64.b64encode(b"plain text").decode()},
            "input_image",
            "image_invalid",
            id="not an image",
        ),
        pytest.param({"input_image": "A" * 28_000_000}, "input_image", "image_invalid", id="over 20 MB"),
        pytest.param(  # 20.005 MP in a few kB
            {"input_image": base64_image("PNG", (5000, 4001), "1")},
            "input_image",
            "image_invalid",
            id="over 20 MP",
        ),
        pytest.param({"aspect_ratio": "1:3"}, "aspect_ratio", "aspect_ratio", id="aspect ratio below 3:7"),
        pytest.param({"aspect_ratio": "8:3"}, "aspect_ratio", "aspect_ratio", id="aspect ratio above 7:3"),
        pytest.param({"aspect_ratio": "16/9"}, "aspect_ratio", "aspect_ratio", id="aspect ratio malformed"),
        pytest.param({"safety_tolerance": 7}, "safety_tolerance", "range", id="safety_tolerance"),
        pytest.param({"output_format": "webp"}, "output_format", "enum", id="output_format"),
        pytest.param(
            {"webhook_url": "ftp://example.com/hook"}, "webhook_url", "url_scheme", id="webhook_url"
        ),
    ],
)
def test_invalid_fields_are_refused_with_422_in_the_live_flavour(
    live: Sim, change: dict[str, Any], loc: str, kind: str
) -> None:
    body = {"prompt": "Change the car color to red", "input_image": IMAGE} | change
    before = live.stats()["rejected"]

    response = live.http.post(
        f"{live.url}/v1/flux-kontext-pro",
        json={key: value for key, value in body.items() if value is not None},
        headers={"x-key": KEY},
    )

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["type"]) == (["body", loc], kind)
    assert problem["msg"]
    assert live.stats()["rejected"] == before + 1


@pytest.mark.parametrize(
    ("change", "status"),
    [
        pytest.param({"image": None}, 422, id="missing image"),
        pytest.param({"steps": 51}, 422, id="steps over the schema's maximum"),
        pytest.param({"seed": -1}, 422, id="seed below the schema's minimum"),
        pytest.param({"image": "not base64!"}, 400, id="bad base64"),
        pytest.param({"image": ""}, 400, id="empty image"),
        pytest.param({"prompt": ""}, 400, id="empty prompt"),
        pytest.param({"seed": 2**64}, 400, id="seed over int64"),
        pytest.param({"image": "not base64!", "steps": 0}, 422, id="both kinds"),
    ],
)
def test_the_seed_flavour_answers_400_to_what_its_schema_admits_but_cannot_run(
    sim: Sim, change: dict[str, Any], status: int
) -> None:
    body = {"prompt": "Change the car color to red", "image": IMAGE} | change

    response = sim.http.post(
        f"{sim.url}/v1/flux-kontext-max",
        json={key: value for key, value in body.items() if value is not None},
        headers={"x-key": KEY},
    )

    assert response.status_code == status
    assert isinstance(response.json()["detail"], list if status == 422 else str)


def test_every_problem_is_reported_at_once(sim: Sim) -> None:
    response = sim.http.post(f"{sim.url}/flux-kontext-pro", json={"steps": 0}, headers={"x-key": KEY})

    assert response.status_code == 422
    assert [tuple(problem["loc"]) for problem in response.json()["detail"]] == [
        ("body", "prompt"),
        ("body", "image"),  # the seed spec's name for it
        ("body", "steps"),
    ]


def test_steps_and_guidance_are_ignored_on_kontext_by_the_live_flavour_as_bfl_does(live: Sim) -> None:
    assert live.submit(steps=0, guidance=100).status_code == 200


@pytest.mark.parametrize(
    ("content", "msg"), [(b"{not json", "JSON decode error"), (b"[1, 2]", "Input should be a JSON object")]
)
def test_a_body_that_is_not_a_json_object_is_refused_with_422(sim: Sim, content: bytes, msg: str) -> None:
    response = sim.http.post(
        f"{sim.url}/v1/flux-kontext-pro",
        content=content,
        headers={"x-key": KEY, "content-type": "application/json"},
    )

    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert (problem["loc"], problem["msg"]) == (["body"], msg)


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "Not authenticated"),
        ({"x-key": ""}, "Not authenticated"),
        ({"X-Key": "wrong"}, "Invalid API key"),
    ],
)
def test_a_missing_or_unknown_key_is_refused_with_401(
    sim: Sim, live: Sim, headers: dict[str, str], detail: str
) -> None:
    body = {"prompt": "Change the car color to red", "input_image": IMAGE}

    for running, status, said in ((sim, 401, detail), (live, 403, "Not authenticated")):
        submitted = running.http.post(f"{running.url}/v1/flux-kontext-pro", json=body, headers=headers)
        polled = running.http.get(f"{running.url}/v1/get_result", params={"id": "x"}, headers=headers)

        assert (submitted.status_code, submitted.json()) == (status, {"detail": said})
        assert (polled.status_code, polled.json()) == (status, {"detail": said})


@pytest.mark.parametrize("key", ['"test-key"', "test key", "test-key.", "sk:" + KEY, "k" * 129])
def test_the_live_flavour_refuses_a_key_of_no_bfl_shape_with_422(sim: Sim, live: Sim, key: str) -> None:
    body = {"prompt": "Change the car color to red", "input_image": IMAGE}
    headers = {"x-key": key}

    for running, status, said in ((live, 422, "Invalid API key format"), (sim, 401, "Invalid API key")):
        submitted = running.http.post(f"{running.url}/v1/flux-kontext-pro", json=body, headers=headers)
        polled = running.http.get(f"{running.url}/v1/get_result", params={"id": "x"}, headers=headers)

        assert (submitted.status_code, submitted.json()) == (status, {"detail": said})
        assert (polled.status_code, polled.json()) == (status, {"detail": said})


def test_without_configured_keys_the_live_flavour_takes_any_key() -> None:
    with simulator(flavor="live", latency_s=0.05) as running:
        assert running.submit(key="any key: at all").status_code == 200


def test_every_configured_key_is_accepted_in_any_header_case(sim: Sim) -> None:
    body = {"prompt": "Change the car color to red", "input_image": IMAGE}

    assert (
        sim.http.post(f"{sim.url}/v1/flux-kontext-pro", json=body, headers={"X-KEY": KEY}).status_code == 200
    )
    assert sim.submit(key="second-key").status_code == 200


def test_credits_run_out_with_402() -> None:
    with simulator(FakeClock(T0), credits=10.0) as sim:
        answers = [
            sim.submit().status_code,
            sim.submit("/v1/flux-kontext-max").status_code,
            sim.submit().status_code,
            sim.submit().status_code,
        ]
        refused = sim.submit()

        assert answers == [200, 402, 200, 402]
        assert (refused.status_code, refused.json()) == (402, {"detail": "Insufficient credits"})
        assert sim.stats()["rejected"] == 3
        assert sim.stats()["submits"] == 2
        assert sim.state.credits(KEY) == 2.0


def test_active_tasks_above_the_limit_are_refused_with_429_until_some_finish() -> None:
    clock = FakeClock(T0)
    with simulator(clock, latency_s=1.0, max_active=3, max_active_kontext_max=2) as sim:
        answers = [sim.submit("/v1/flux-kontext-max").status_code for _ in range(3)]
        answers += [sim.submit().status_code for _ in range(2)]
        refused = sim.submit()
        clock.advance(1.0)

        assert answers == [200, 200, 429, 200, 429]
        assert refused.status_code == 429
        assert "maximum of 3 active tasks" in refused.json()["detail"]
        assert sim.submit().status_code == 200


def test_the_default_limits_are_24_active_tasks_and_6_for_kontext_max() -> None:
    with simulator(FakeClock(T0)) as sim:
        max_answers = [sim.submit("/v1/flux-kontext-max", key="any-key").status_code for _ in range(7)]
        pro_answers = [sim.submit(key="any-key").status_code for _ in range(19)]

        assert max_answers == [200] * 6 + [429]
        assert pro_answers == [200] * 18 + [429]
        assert sim.submit(key="another-account").status_code == 200


# -- outcomes and result URLs --------------------------------------------------------------


def test_errors_and_both_moderations_are_reported_by_get_result() -> None:
    clock = FakeClock(T0)
    with simulator(
        clock, latency_s=1.0, error_rate=1.0, moderate_words=("forbidden",), content_moderate_words=("gory",)
    ) as sim:
        failed = sim.task_id()
        request_moderated = sim.task_id(prompt="Something forbidden")
        content_moderated = sim.task_id(prompt="Make it gory")
        assert {
            sim.poll(task_id)["status"] for task_id in (failed, request_moderated, content_moderated)
        } == {"Pending"}
        clock.advance(1.0)

        bodies = [sim.poll(task_id) for task_id in (failed, request_moderated, content_moderated)]

    assert [(body["status"], body.get("result")) for body in bodies] == [
        ("Error", None),
        ("Request Moderated", None),
        ("Content Moderated", None),
    ]
    assert bodies[1]["details"] == {"Moderation Reasons": ["Blocked term: forbidden"]}
    assert bodies[2]["details"] == {"Moderation Reasons": ["Blocked term: gory"]}


def test_a_signed_url_expires_and_get_result_signs_a_fresh_one(sim: Sim, clock: FakeClock) -> None:
    task_id = sim.task_id()
    clock.advance(1.0)
    sample = sim.poll(task_id)["result"]["sample"]
    assert sim.http.get(sample).status_code == 200

    clock.advance(0.5)
    expired = sim.http.get(sample)
    fresh = sim.poll(task_id)["result"]["sample"]

    assert expired.status_code == 403
    assert "Signed expiry time has passed" in expired.text
    assert fresh != sample
    assert sim.http.get(fresh).status_code == 200


def test_a_tampered_or_mismatched_url_is_refused(sim: Sim, clock: FakeClock) -> None:
    task_id, other_id = sim.task_id(), sim.task_id()
    clock.advance(1.0)
    sample = httpx.URL(sim.poll(task_id)["result"]["sample"])
    before = sim.stats()["download_errors"]

    tampered = sim.http.get(sample.copy_set_param("sig", "AAAA" + sample.params["sig"][4:]))
    later = sim.http.get(sample.copy_set_param("exp", str(float(sample.params["exp"]) + 3600)))
    other_task = sim.http.get(str(sample).replace(task_id, other_id))
    other_format = sim.http.get(str(sample).replace("sample.jpeg", "sample.png"))
    unsigned = sim.http.get(f"{sim.url}/results/{task_id}/sample.jpeg")

    assert [r.status_code for r in (tampered, later, other_task, other_format, unsigned)] == [
        403,
        403,
        403,
        404,
        403,
    ]
    assert sim.stats()["download_errors"] == before + 5


def test_download_error_rate_answers_503() -> None:
    clock = FakeClock(T0)
    with simulator(clock, latency_s=1.0, download_error_rate=1.0) as sim:
        task_id = sim.task_id()
        clock.advance(1.0)

        response = sim.http.get(sim.poll(task_id)["result"]["sample"])

        assert response.status_code == 503
        assert sim.stats()["download_errors"] == 1
        assert sim.describe(task_id)["sha256"] is None


def read_into(buffer: bytearray, response: httpx.Response) -> None:
    """Append the body to `buffer` as it arrives, so what came before an error is kept."""
    for chunk in response.iter_bytes():
        buffer += chunk


def test_a_truncated_download_is_a_protocol_error_not_a_short_body() -> None:
    clock = FakeClock(T0)
    with simulator(clock, latency_s=1.0, download_truncate_rate=1.0) as sim:
        task_id = sim.task_id()
        clock.advance(1.0)
        sample = sim.poll(task_id)["result"]["sample"]

        received = bytearray()
        with sim.http.stream("GET", sample) as response:
            announced = int(response.headers["content-length"])
            with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
                read_into(received, response)
        with pytest.raises(httpx.RemoteProtocolError):
            sim.http.get(sample)

        record = sim.state.record(task_id)
        assert record is not None and record.output is not None
        assert (response.status_code, response.headers["content-type"]) == (200, "image/jpeg")
        assert announced == len(record.output)
        assert len(received) == announced // 2
        assert bytes(received) == record.output[: len(received)]
        # The simulator still knows the digest of the whole image: a stored truncated body shows.
        assert sim.describe(task_id)["sha256"] == hashlib.sha256(record.output).hexdigest()
        assert (sim.stats()["downloads_truncated"], sim.stats()["downloads"]) == (2, 0)


def test_an_early_expired_url_is_refused_and_a_fresh_one_may_work() -> None:
    clock = FakeClock(T0)
    # With seed 12 the first URL minted is expired (a 0.5 chance each) and the second is not.
    with simulator(clock, latency_s=1.0, seed=12, url_early_expire_rate=0.5) as sim:
        task_id = sim.task_id()
        clock.advance(1.0)

        expired = sim.http.get(sim.poll(task_id)["result"]["sample"])
        fresh = sim.http.get(sim.poll(task_id)["result"]["sample"])

        assert expired.status_code == 403
        assert "Signed expiry time has passed" in expired.text
        assert fresh.status_code == 200
        assert sim.describe(task_id)["sha256"] == hashlib.sha256(fresh.content).hexdigest()
        assert sim.stats()["urls_expired_early"] == 1


def test_get_result_answers_500_during_the_error_window_then_recovers() -> None:
    clock = FakeClock(T0)
    with simulator(clock, latency_s=1.0, get_result_error_s=30.0) as sim:
        task_id = sim.task_id()  # submits still work
        clock.advance(29.9)
        failed = sim.get_result(task_id)
        unauthenticated = sim.http.get(f"{sim.url}/v1/get_result", params={"id": task_id})
        clock.advance(0.1)

        assert (failed.status_code, failed.json()) == (500, {"detail": "Internal Server Error"})
        assert unauthenticated.status_code == 401
        assert sim.poll(task_id)["status"] == "Ready"
        assert (sim.stats()["get_result_errors"], sim.stats()["get_result"]) == (1, 2)


def test_get_result_error_rate_answers_a_seeded_share_with_500() -> None:
    with simulator(FakeClock(T0), seed=16, get_result_error_rate=0.5) as sim:
        task_id = sim.task_id()

        answers = [sim.get_result(task_id).status_code for _ in range(6)]

        assert answers == [500, 500, 200, 200, 200, 200]
        assert sim.stats()["get_result_errors"] == 2


def test_public_url_is_used_for_polling_and_sample_urls() -> None:
    clock = FakeClock(T0)
    with simulator(clock, latency_s=1.0, public_url="https://sim.example") as sim:
        response = sim.submit()
        task_id = response.json()["id"]
        clock.advance(1.0)

        assert response.json()["polling_url"] == f"https://sim.example/v1/get_result?id={task_id}"
        assert sim.poll(task_id)["result"]["sample"].startswith(f"https://sim.example/results/{task_id}/")


def test_image_urls_are_fetched_with_the_injected_transport() -> None:
    picture = encode_image("PNG", (300, 100))

    def remote(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/down":
            raise httpx.ConnectError("refused", request=request)
        return {
            "/car.png": httpx.Response(200, content=picture),
            "/text": httpx.Response(200, content=b"not a picture"),
            "/huge": httpx.Response(200, content=b"\0" * (20 * 1024 * 1024 + 1)),
        }.get(request.url.path, httpx.Response(404))

    with simulator(FakeClock(T0), transport=httpx.MockTransport(remote), flavor="live") as sim:
        accepted = sim.submit(input_image="https://images.test/car.png")
        refused = {
            path: sim.submit(image=f"https://images.test{path}", input_image=None)
            for path in ("/missing", "/text", "/huge", "/down")
        }

    assert accepted.status_code == 200
    assert accepted.json()["input_mp"] == 0.03
    assert accepted.json()["output_mp"] == 1.05  # 3:1 is clamped to 7:3: 1568x672
    for response in refused.values():
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "image"]
    assert "HTTP 404" in refused["/missing"].json()["detail"][0]["msg"]
    assert "not a JPEG, PNG or WebP" in refused["/text"].json()["detail"][0]["msg"]
    assert "larger than 20 MB" in refused["/huge"].json()["detail"][0]["msg"]
    assert "ConnectError" in refused["/down"].json()["detail"][0]["msg"]


# -- webhooks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    name: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded

    @property
    def task_id(self) -> str:
        return str(self.json.get("task_id", self.json.get("id")))


@dataclass
class Inbox:
    """A webhook receiver: records every arrival, answers from a per-name script (then 200).
    Requests to `/hook/slow` are held until `release` is set."""

    url: str = ""
    hooks: list[Hook] = field(default_factory=list)
    held: list[Hook] = field(default_factory=list)
    scripts: dict[str, list[int]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            hook = Hook(request.path_params["name"], dict(request.headers), await request.body())
            if hook.name == "slow":
                self.held.append(hook)
                await anyio.to_thread.run_sync(self.release.wait)
            self.hooks.append(hook)
            script = self.scripts.get(hook.name)
            return Response(status_code=script.pop(0) if script else 200)

        return Starlette(routes=[Route("/hook/{name}", receive, methods=["POST"])])

    def hook_url(self, name: str) -> str:
        return f"{self.url}/hook/{name}"

    def for_task(self, task_id: str) -> list[Hook]:
        return [hook for hook in self.hooks if hook.task_id == task_id]


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    receiver = Inbox()
    with serve(receiver.app()) as url:
        receiver.url = url
        try:
            yield receiver
        finally:
            receiver.release.set()


FAST: dict[str, Any] = {"latency_s": 0.05, "webhook_retry_delays": (0.02, 0.02, 0.02)}


def test_observed_webhooks_carry_the_secret_and_a_downloadable_sample(inbox: Inbox) -> None:
    with simulator(moderate_words=("forbidden",), **FAST) as sim:
        ready = sim.task_id(webhook_url=inbox.hook_url("observed"), webhook_secret="s3cret", seed=9)
        anonymous = sim.task_id(webhook_url=inbox.hook_url("observed"))
        moderated = sim.task_id(prompt="forbidden", webhook_url=inbox.hook_url("observed"))
        wait_until(lambda: all(inbox.for_task(t) for t in (ready, anonymous, moderated)), 5, "webhooks")
        [hook], [plain], [refused] = (inbox.for_task(t) for t in (ready, anonymous, moderated))
        sample = sim.http.get(hook.json["result"]["sample"])

        assert hook.headers["x-webhook-secret"] == "s3cret"
        assert hook.headers["content-type"] == "application/json"
        assert "x-bfl-signature" not in hook.headers
        assert set(hook.json) == {"task_id", "status", "result", "progress"}
        assert (hook.json["status"], hook.json["progress"], hook.json["result"]["seed"]) == (
            "SUCCESS",
            1.0,
            9,
        )
        assert sample.status_code == 200
        assert sample.headers["content-type"] == "image/jpeg"
        assert "x-webhook-secret" not in plain.headers
        assert refused.json == {
            "task_id": moderated,
            "status": "Request Moderated",
            "details": {"Moderation Reasons": ["Blocked term: forbidden"]},
        }
        assert [(d["copy"], d["attempt"], d["status"]) for d in sim.describe(ready)["webhooks"]] == [
            (1, 1, 200)
        ]
        assert sim.stats()["webhooks_sent"] == 3


def test_documented_webhooks_are_signed_over_the_raw_body(inbox: Inbox) -> None:
    with simulator(webhook_shape="documented", **FAST) as sim:
        task_id = sim.task_id(webhook_url=inbox.hook_url("documented"), webhook_secret="s3cret")
        wait_until(lambda: inbox.for_task(task_id), 5, "webhook")
        [hook] = inbox.for_task(task_id)

    assert hook.headers["x-webhook-secret"] == "s3cret"
    assert hook.headers["x-bfl-signature"] == body_signature("s3cret", hook.body)
    assert set(hook.json) == {"id", "status", "result", "timestamp"}
    assert hook.json["status"] == "Ready"
    assert set(hook.json["result"]) == {"sample", "prompt", "seed", "start_time", "end_time", "duration"}


def test_a_webhook_answered_with_an_error_is_retried_until_2xx(inbox: Inbox) -> None:
    inbox.scripts["flaky"] = [500, 502]
    with simulator(**FAST) as sim:
        task_id = sim.task_id(webhook_url=inbox.hook_url("flaky"))
        wait_until(lambda: len(sim.describe(task_id)["webhooks"]) == 3, 5, "three attempts")
        deliveries = sim.describe(task_id)["webhooks"]

        assert [(d["attempt"], d["status"]) for d in deliveries] == [(1, 500), (2, 502), (3, 200)]
        assert len(inbox.for_task(task_id)) == 3
        assert sim.stats()["webhooks_failed"] == 0


def test_webhook_delivery_gives_up_after_the_last_retry(inbox: Inbox) -> None:
    inbox.scripts["down"] = [500] * 10
    with simulator(latency_s=0.05, webhook_retry_delays=(0.02, 0.02)) as sim:
        refused = sim.task_id(webhook_url=inbox.hook_url("down"))
        unreachable = sim.task_id(webhook_url=f"http://127.0.0.1:{free_port()}/hook")
        wait_until(lambda: sim.stats()["webhooks_failed"] == 2, 5, "both deliveries to give up")

        assert [d["status"] for d in sim.describe(refused)["webhooks"]] == [500, 500, 500]
        assert [(d["status"], d["error"]) for d in sim.describe(unreachable)["webhooks"]] == [
            (None, "ConnectError")
        ] * 3
        assert sim.stats()["webhooks_sent"] == 6


def test_dropped_webhooks_are_never_sent(inbox: Inbox) -> None:
    with simulator(seed=3, webhook_drop_rate=0.5, **FAST) as sim:
        task_ids = [sim.task_id(webhook_url=inbox.hook_url("drop")) for _ in range(8)]
        sent = {t for t in task_ids if sim.describe(t)["webhook_copies"] == 1}
        assert 0 < len(sent) < len(task_ids)
        wait_until(lambda: all(inbox.for_task(t) for t in sent), 5, "the webhooks not dropped")

        assert {hook.task_id for hook in inbox.hooks} & set(task_ids) == sent
        assert sim.stats()["webhooks_dropped"] == len(task_ids) - len(sent)


def test_webhook_delay_postpones_the_webhook_after_the_task_is_ready(inbox: Inbox) -> None:
    with simulator(webhook_delay_s=0.2, **FAST) as sim:
        task_id = sim.task_id(webhook_url=inbox.hook_url("delayed"))
        wait_until(lambda: sim.describe(task_id)["webhooks"], 5, "the delayed webhook, sent and answered")

        described = sim.describe(task_id)
        assert described["webhooks"][0]["at"] - described["ready_at"] >= 0.2


def test_duplicated_webhooks_are_sent_twice(inbox: Inbox) -> None:
    with simulator(webhook_duplicate_rate=1.0, **FAST) as sim:
        task_id = sim.task_id(webhook_url=inbox.hook_url("twice"))
        # The simulator records a copy once it has the answer, a moment after the inbox has the request.
        wait_until(
            lambda: len(inbox.for_task(task_id)) == 2 and len(sim.describe(task_id)["webhooks"]) == 2,
            5,
            "two copies sent and answered",
        )

        first, second = inbox.for_task(task_id)
        assert first.json["task_id"] == second.json["task_id"] == task_id
        assert [d["copy"] for d in sim.describe(task_id)["webhooks"]] == [1, 2]


def test_a_slow_webhook_receiver_does_not_delay_other_tasks(inbox: Inbox) -> None:
    with simulator(**FAST) as sim:
        slow = sim.task_id(webhook_url=inbox.hook_url("slow"))
        fast = sim.task_id(webhook_url=inbox.hook_url("fast"))
        try:
            wait_until(lambda: inbox.for_task(fast), 5, "the fast receiver's webhook")
            assert [hook.task_id for hook in inbox.held] == [slow]
            assert not inbox.for_task(slow)
        finally:
            inbox.release.set()
        wait_until(lambda: inbox.for_task(slow), 5, "the slow receiver's webhook")


def test_reordered_webhooks_arrive_in_the_seeded_order_not_the_finishing_one(inbox: Inbox) -> None:
    with simulator(seed=126, webhook_reorder_s=2.0, webhook_duplicate_rate=1.0, **FAST) as sim:
        tasks = [sim.task_id(webhook_url=inbox.hook_url("reorder")) for _ in range(3)]
        wait_until(lambda: sum(len(inbox.for_task(t)) for t in tasks) == 6, 10, "every copy")
        arrivals = [tasks.index(hook.task_id) for hook in inbox.hooks if hook.task_id in tasks]
        holds = sorted(
            (hold, n) for n, task_id in enumerate(tasks) for hold in sim.describe(task_id)["webhook_holds"]
        )

        # Tasks finish in submit order (0, 1, 2) but each copy is held back by a time drawn from the
        # seed, 200 ms or more apart with seed 126: so the order is the seed's, even on a busy machine.
        assert arrivals == [n for _, n in holds] == [1, 2, 0, 0, 1, 2]
        assert [d["copy"] for d in sim.describe(tasks[0])["webhooks"]] == [2, 1]
        assert all(0.0 <= hold < 2.0 for hold, _ in holds)
