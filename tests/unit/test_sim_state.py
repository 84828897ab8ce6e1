"""The simulator's state machine, without sockets: clock, RNG and ids are injected."""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from receiver.bfl.validation import EditFields, InputImage
from receiver.catalog import CATALOG, ModelSpec
from receiver.errors import ConfigError
from receiver.settings import SimSettings
from receiver.simulator.state import (
    Access,
    Delivery,
    InsufficientCredits,
    SimState,
    Status,
    Submission,
    Task,
    TooManyActiveTasks,
)
from tests.clock import FakeClock

T0 = 1_700_000_000.0
IMAGE = InputImage(data=b"input-bytes", content_type="image/png", width=1600, height=900)
FIELDS = EditFields(prompt="Change the car color to red", images=(IMAGE,))
PRO, MAX = CATALOG["flux-kontext-pro"], CATALOG["flux-kontext-max"]


def make_state(clock: FakeClock, seed: int = 1, **knobs: Any) -> SimState:
    ids = (f"task-{n}" for n in itertools.count(1))
    settings = replace(SimSettings(latency_s=2.0, url_ttl_s=600.0, task_ttl_s=100.0), **knobs)
    return SimState(settings, clock=clock, rng=random.Random(seed), url_secret="secret", new_id=ids.__next__)


def submission(
    model: ModelSpec = PRO, account: str = "key", images: tuple[InputImage, ...] = (IMAGE,), **fields: Any
) -> Submission:
    return Submission(account, model, replace(FIELDS, **fields), images, "http://sim.test")


def polled(state: SimState, task_id: str) -> dict[str, Any]:
    body = state.poll(task_id)
    assert body is not None, f"{task_id} is not found"
    return body


def sample_params(url: str) -> tuple[str, str, str]:
    """(extension, exp, sig) of a signed sample URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path.rsplit(".", 1)[1], query["exp"][0], query["sig"][0]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def test_a_task_is_pending_until_its_latency_has_passed_then_ready(clock: FakeClock) -> None:
    state = make_state(clock)
    task = state.submit(submission(seed=42))

    clock.advance(1.0)
    pending = polled(state, task.id)
    clock.advance(1.0)
    ready = polled(state, task.id)

    assert pending == {"id": "task-1", "status": "Pending", "progress": 0.5}
    assert ready["status"] == "Ready"
    result = ready["result"]
    assert result["sample"].startswith("http://sim.test/results/task-1/sample.jpeg?exp=")
    assert {k: v for k, v in result.items() if k != "sample"} == {
        "prompt": "Change the car color to red",
        "seed": 42,
        "start_time": T0,
        "end_time": T0 + 2.0,
        "duration": 2.0,
    }
    record = state.record(task.id)
    assert record is not None
    assert record.polls == 2
    assert state.stats.get_result == 2


def test_a_task_is_forgotten_task_ttl_after_it_finished(clock: FakeClock) -> None:
    state = make_state(clock)
    task = state.submit(submission())

    clock.advance(2.0 + 99.9)
    assert polled(state, task.id)["status"] == "Ready"
    clock.advance(0.1)
    assert state.poll(task.id) is None  # like an id never seen
    assert state.record(task.id) is None
    assert state.describe(task.id) is None


def test_an_unknown_id_is_not_found_seed_404_or_live_task_not_found_with_every_key(clock: FakeClock) -> None:
    assert make_state(clock).poll("nope") is None  # the app answers 404 (seed flavour)

    body = make_state(clock, flavor="live").poll("nope")

    assert body == {
        "id": "nope",
        "status": "Task not found",
        "result": None,
        "progress": None,
        "details": None,
        "preview": None,
    }


def test_error_rate_one_fails_every_task_with_a_reason(clock: FakeClock) -> None:
    state = make_state(clock, error_rate=1.0)
    task = state.submit(submission())
    clock.advance(2.0)

    body = polled(state, task.id)

    assert body["status"] == "Error"
    assert "result" not in body  # the seed spec: only when Ready
    assert "SIM_ERROR_RATE" in body["details"]["error"]


@pytest.mark.parametrize(
    ("prompt", "status", "details"),
    [
        ("Put a BOMB on the car", "Request Moderated", {"Moderation Reasons": ["Blocked term: bomb"]}),
        ("Make it gory and dark", "Content Moderated", {"Moderation Reasons": ["Blocked term: gory"]}),
        # Whole words only; and error_rate (1 here) applies to the tasks moderation let through.
        ("A bombastic sunset", "Error", {"error": "Simulated generation failure (SIM_ERROR_RATE)"}),
    ],
)
def test_moderation_words_decide_the_outcome(
    clock: FakeClock, prompt: str, status: str, details: dict[str, Any]
) -> None:
    state = make_state(clock, moderate_words=("bomb",), content_moderate_words=("gory",), error_rate=1.0)
    task = state.submit(submission(prompt=prompt))
    clock.advance(1.9)
    assert polled(state, task.id)["status"] == "Pending"
    clock.advance(0.1)

    body = polled(state, task.id)

    assert (body["status"], body["details"], body.get("result")) == (status, details, None)


def test_credits_are_charged_per_model_and_moderated_tasks_are_free(clock: FakeClock) -> None:
    state = make_state(clock, credits=12.0, moderate_words=("forbidden",))

    state.submit(submission(MAX))
    state.submit(submission(prompt="something forbidden"))
    state.submit(submission(PRO))

    assert state.credits("key") == 0.0
    with pytest.raises(InsufficientCredits):
        state.submit(submission(PRO))
    assert state.credits("other-account") == 12.0
    state.submit(submission(account="other-account"))


def test_credits_are_not_simulated_by_default(clock: FakeClock) -> None:
    state = make_state(clock)
    for _ in range(6):
        state.submit(submission(MAX))
    assert state.credits("key") is None


def test_active_tasks_are_limited_per_account_until_they_finish(clock: FakeClock) -> None:
    state = make_state(clock, max_active=3, max_active_kontext_max=2)
    state.submit(submission(MAX))
    state.submit(submission(MAX))

    with pytest.raises(TooManyActiveTasks, match="2 active flux-kontext-max"):
        state.submit(submission(MAX))
    state.submit(submission(PRO))
    with pytest.raises(TooManyActiveTasks, match="maximum of 3 active tasks"):
        state.submit(submission(PRO))
    state.submit(submission(MAX, account="someone-else"))

    clock.advance(2.0)
    state.submit(submission(MAX))
    assert state.stats.submits == 5
    assert (state.stats.peak_active, state.stats.peak_active_kontext_max) == (3, 2)  # what was seen


def test_sample_urls_expire_and_refuse_tampering(clock: FakeClock) -> None:
    state = make_state(clock, url_ttl_s=0.2)
    task = state.submit(submission(output_format="png"))
    clock.advance(2.0)
    url = polled(state, task.id)["result"]["sample"]
    extension, exp, sig = sample_params(url)

    assert extension == "png"
    assert state.open_sample(task.id, "png", exp, sig)[0] is Access.OK
    assert state.open_sample(task.id, "jpeg", exp, sig)[0] is Access.NOT_FOUND
    assert state.open_sample(task.id, "png", exp, sig[:-2] + "xx")[0] is Access.FORBIDDEN
    assert state.open_sample(task.id, "png", str(float(exp) + 60), sig)[0] is Access.FORBIDDEN
    assert state.open_sample("task-2", "png", exp, sig)[0] is Access.FORBIDDEN
    clock.advance(0.2)
    assert state.open_sample(task.id, "png", exp, sig)[0] is Access.EXPIRED
    assert state.stats.downloads == 1
    assert state.stats.download_errors == 5


def test_every_poll_signs_a_fresh_url(clock: FakeClock) -> None:
    state = make_state(clock)
    task = state.submit(submission())
    clock.advance(2.0)
    first = polled(state, task.id)["result"]["sample"]
    clock.advance(1.0)
    second = polled(state, task.id)["result"]["sample"]

    assert first != second
    assert float(sample_params(second)[1]) == pytest.approx(clock.now + 600.0)


def test_a_url_for_a_forgotten_task_is_not_found(clock: FakeClock) -> None:
    state = make_state(clock, task_ttl_s=1.0)
    task = state.submit(submission())
    clock.advance(2.0)
    _, exp, sig = sample_params(state.sample_url(task))
    clock.advance(1.0)

    assert state.open_sample(task.id, "jpeg", exp, sig) == (Access.NOT_FOUND, None)


def test_a_pending_task_has_no_sample_to_download(clock: FakeClock) -> None:
    state = make_state(clock)
    task = state.submit(submission())
    _, exp, sig = sample_params(state.sample_url(task))

    assert state.open_sample(task.id, "jpeg", exp, sig)[0] is Access.NOT_FOUND


def test_download_error_rate_answers_unavailable(clock: FakeClock) -> None:
    state = make_state(clock, download_error_rate=1.0)
    task = state.submit(submission())
    clock.advance(2.0)
    _, exp, sig = sample_params(state.sample_url(task))

    assert state.open_sample(task.id, "jpeg", exp, sig)[0] is Access.UNAVAILABLE


def test_fault_choices_are_reproducible_with_a_seed(clock: FakeClock) -> None:
    def outcomes(seed: int) -> list[tuple[Status, int, int]]:
        state = make_state(FakeClock(T0), seed=seed, error_rate=0.5, webhook_drop_rate=0.3)
        tasks = [state.submit(submission(webhook_url="http://hook.test/")) for _ in range(20)]
        return [(task.outcome, task.seed, task.webhook_copies) for task in tasks]

    first = outcomes(7)

    assert first == outcomes(7)
    assert first != outcomes(8)
    assert {outcome for outcome, _, _ in first} == {Status.READY, Status.ERROR}
    assert {copies for _, _, copies in first} == {0, 1}


def test_webhook_copies_follow_drop_and_duplicate_rates(clock: FakeClock) -> None:
    dropping = make_state(clock, webhook_drop_rate=1.0)
    doubling = make_state(clock, webhook_duplicate_rate=1.0)

    assert dropping.submit(submission(webhook_url="http://hook.test/")).webhook_copies == 0
    assert dropping.submit(submission()).webhook_copies == 0
    assert dropping.stats.webhooks_dropped == 1  # a task without webhook_url has nothing to drop
    assert doubling.submit(submission(webhook_url="http://hook.test/")).webhook_copies == 2
    assert make_state(clock).submit(submission(webhook_url="http://hook.test/")).webhook_copies == 1


def test_output_follows_aspect_ratio_format_and_seed(clock: FakeClock) -> None:
    state = make_state(clock)
    default = state.submit(submission())
    square = state.submit(submission(aspect_ratio="1:1", output_format="png", seed=5))

    assert (default.output_format, default.output_size, default.input_mp) == ("jpeg", (1376, 768), 1.44)
    assert (square.output_format, square.output_size, square.seed) == ("png", (1024, 1024), 5)
    assert square.output_mp == 1.05


def test_observed_webhook_bodies(clock: FakeClock) -> None:
    state = make_state(clock, moderate_words=("forbidden",))
    ok = state.submit(submission(seed=3))
    moderated = state.submit(submission(prompt="forbidden fruit"))
    failing = make_state(clock, error_rate=1.0)
    failed = failing.submit(submission())
    clock.advance(2.0)

    body = state.webhook_body(ok)
    assert body["task_id"] == ok.id
    assert body["status"] == "SUCCESS"
    assert body["progress"] == 1.0
    assert body["result"]["seed"] == 3
    assert body["result"]["sample"].startswith(f"http://sim.test/results/{ok.id}/sample.jpeg?")
    assert state.webhook_body(moderated) == {
        "task_id": moderated.id,
        "status": "Request Moderated",
        "details": {"Moderation Reasons": ["Blocked term: forbidden"]},
    }
    assert failing.webhook_body(failed) == {
        "task_id": failed.id,
        "status": "Error",
        "error": "Simulated generation failure (SIM_ERROR_RATE)",
    }


def test_documented_webhook_bodies(clock: FakeClock) -> None:
    state = make_state(clock, webhook_shape="documented")
    ok = state.submit(submission())
    failing = make_state(clock, webhook_shape="documented", error_rate=1.0)
    failed = failing.submit(submission())
    clock.advance(2.0)

    body = state.webhook_body(ok)
    error = failing.webhook_body(failed)

    assert set(body) == {"id", "status", "result", "timestamp"}
    assert (body["id"], body["status"]) == (ok.id, "Ready")
    assert datetime.fromisoformat(body["timestamp"]).timestamp() == clock.now
    assert set(body["result"]) == {"sample", "prompt", "seed", "start_time", "end_time", "duration"}
    assert (error["id"], error["status"], error["error"]) == (failed.id, "Error", "Task failed")
    assert "SIM_ERROR_RATE" in error["message"]


def test_describe_reports_deliveries_polls_and_the_result_digest(clock: FakeClock) -> None:
    state = make_state(clock)
    task = state.submit(submission(webhook_url="http://hook.test/", webhook_secret="s3cret"))
    clock.advance(2.0)
    polled(state, task.id)
    state.record_delivery(task.id, Delivery(1, 1, 500, None, clock.now))
    state.record_delivery(task.id, Delivery(1, 2, None, "ConnectError", clock.now))
    record = state.record(task.id)
    assert record is not None
    record.keep_output(b"edited")

    described = state.describe(task.id)

    assert described is not None
    assert described["status"] == "Ready"
    assert described["get_result_calls"] == 1
    assert described["sha256"] == hashlib.sha256(b"edited").hexdigest()
    assert [(d["attempt"], d["status"], d["error"]) for d in described["webhooks"]] == [
        (1, 500, None),
        (2, None, "ConnectError"),
    ]
    assert "s3cret" not in repr(described)
    assert record.source is None
    assert state.stats.webhooks_sent == 2


# -- faults that show whether a receiver ever loses a result --------------------------------


def ready_task(state: SimState, clock: FakeClock, **fields: Any) -> Task:
    task = state.submit(submission(**fields))
    clock.advance(2.0)
    return task


def test_get_result_fails_for_the_first_seconds_after_start(clock: FakeClock) -> None:
    state = make_state(clock, get_result_error_s=30.0)
    clock.advance(29.9)

    assert state.get_result_fails()
    clock.advance(0.1)
    assert not state.get_result_fails()
    assert (state.stats.get_result_errors, state.stats.get_result) == (1, 1)
    state.poll("any")
    assert state.stats.get_result == 2  # every call counts, the failed ones too


def test_get_result_error_rate_fails_a_reproducible_share_of_calls(clock: FakeClock) -> None:
    def failures(seed: int) -> list[bool]:
        state = make_state(FakeClock(T0), seed=seed, get_result_error_rate=0.5)
        return [state.get_result_fails() for _ in range(40)]

    first = failures(3)

    assert first == failures(3)
    assert first != failures(4)
    assert 5 < sum(first) < 35
    assert not any(make_state(clock).get_result_fails() for _ in range(10))


def test_an_early_expired_url_is_refused_like_any_expired_one(clock: FakeClock) -> None:
    state = make_state(clock, url_early_expire_rate=1.0)
    task = ready_task(state, clock)

    from_poll = polled(state, task.id)["result"]["sample"]
    hooked = state.webhook_body(task)["result"]["sample"]

    for url in (from_poll, hooked):
        extension, exp, sig = sample_params(url)
        assert float(exp) < clock.now
        assert state.open_sample(task.id, extension, exp, sig)[0] is Access.EXPIRED
    assert state.stats.urls_expired_early == 2


def test_each_minted_url_has_its_own_reproducible_chance_to_be_expired_early() -> None:
    def verdicts(seed: int) -> list[Access]:
        clock = FakeClock(T0)
        state = make_state(clock, seed=seed, url_early_expire_rate=0.5)
        task = ready_task(state, clock)
        return [state.open_sample(task.id, *sample_params(state.sample_url(task)))[0] for _ in range(30)]

    first = verdicts(5)

    assert first == verdicts(5)
    assert first != verdicts(6)
    assert set(first) == {Access.OK, Access.EXPIRED}


def test_download_truncate_rate_cuts_downloads_and_counts_them(clock: FakeClock) -> None:
    state = make_state(clock, download_truncate_rate=1.0)
    task = ready_task(state, clock)
    _, exp, sig = sample_params(state.sample_url(task))

    access, record = state.open_sample(task.id, "jpeg", exp, sig)

    assert (access, record) == (Access.TRUNCATED, state.record(task.id))
    assert state.open_sample(task.id, "png", exp, sig)[0] is Access.NOT_FOUND  # refusals come first
    assert (state.stats.downloads, state.stats.downloads_truncated, state.stats.download_errors) == (0, 1, 1)
    failing = make_state(clock, download_truncate_rate=1.0, download_error_rate=1.0)
    task = ready_task(failing, clock)
    assert failing.open_sample(task.id, *sample_params(failing.sample_url(task)))[0] is Access.UNAVAILABLE


def test_truncations_are_a_reproducible_share_that_polling_does_not_shift() -> None:
    def verdicts(seed: int, polls: int) -> list[Access]:
        clock = FakeClock(T0)
        state = make_state(clock, seed=seed, download_truncate_rate=0.5, url_early_expire_rate=0.5)
        task = ready_task(state, clock)
        _, exp, sig = sample_params(state.urls.sign("http://sim.test", task.id, "jpeg"))
        found = []
        for _ in range(30):
            for _ in range(polls):
                polled(state, task.id)
            found.append(state.open_sample(task.id, "jpeg", exp, sig)[0])
        return found

    first = verdicts(5, polls=0)

    assert first == verdicts(5, polls=3)
    assert first != verdicts(6, polls=0)
    assert set(first) == {Access.OK, Access.TRUNCATED}


def test_describe_reports_the_digest_of_the_whole_result_even_after_a_truncation(clock: FakeClock) -> None:
    state = make_state(clock, download_truncate_rate=1.0)
    task = ready_task(state, clock)
    access, record = state.open_sample(task.id, *sample_params(state.sample_url(task)))
    assert access is Access.TRUNCATED and record is not None
    record.keep_output(b"the whole edited image")

    described = state.describe(task.id)

    assert described is not None
    assert described["sha256"] == hashlib.sha256(b"the whole edited image").hexdigest()


def test_webhook_holds_are_reproducible_one_per_copy_and_below_the_bound() -> None:
    def holds(seed: int, reorder_s: float) -> list[tuple[float, ...]]:
        state = make_state(
            FakeClock(T0), seed, webhook_reorder_s=reorder_s, webhook_duplicate_rate=0.5, max_active=100
        )
        return [state.submit(submission(webhook_url="http://hook.test/")).webhook_holds for _ in range(30)]

    first = holds(7, 0.4)

    assert first == holds(7, 0.4)
    assert first != holds(8, 0.4)
    assert {len(copies) for copies in first} == {1, 2}
    assert all(0.0 <= hold < 0.4 for copies in first for hold in copies)
    assert any(copies[1] < copies[0] for copies in first if len(copies) == 2)  # a second copy first
    assert holds(7, 0.0) == [(0.0,) * len(copies) for copies in first]


def test_reordering_does_not_change_the_other_fault_choices() -> None:
    def choices(**knobs: Any) -> list[tuple[Status, int, int]]:
        state = make_state(FakeClock(T0), seed=7, error_rate=0.5, webhook_drop_rate=0.3, **knobs)
        tasks = [state.submit(submission(webhook_url="http://hook.test/")) for _ in range(20)]
        return [(task.outcome, task.seed, task.webhook_copies) for task in tasks]

    assert choices() == choices(webhook_reorder_s=5.0)


def test_dropped_or_hookless_tasks_have_no_holds(clock: FakeClock) -> None:
    state = make_state(clock, webhook_reorder_s=1.0, webhook_drop_rate=1.0)

    assert state.submit(submission(webhook_url="http://hook.test/")).webhook_holds == ()
    assert state.submit(submission()).webhook_holds == ()


def test_the_fault_knobs_are_read_from_sim_variables() -> None:
    settings = SimSettings.from_env(
        {
            "SIM_WEBHOOK_REORDER_S": "2.5",
            "SIM_DOWNLOAD_TRUNCATE_RATE": "0.1",
            "SIM_URL_EARLY_EXPIRE_RATE": "0.2",
            "SIM_GET_RESULT_ERROR_S": "30",
            "SIM_GET_RESULT_ERROR_RATE": "0.3",
        }
    )

    assert (
        settings.webhook_reorder_s,
        settings.download_truncate_rate,
        settings.url_early_expire_rate,
        settings.get_result_error_s,
        settings.get_result_error_rate,
    ) == (2.5, 0.1, 0.2, 30.0, 0.3)
    defaults = SimSettings.from_env({})
    assert (defaults.webhook_reorder_s, defaults.download_truncate_rate, defaults.url_early_expire_rate) == (
        0.0,
        0.0,
        0.0,
    )
    assert (defaults.get_result_error_s, defaults.get_result_error_rate) == (0.0, 0.0)
    for name in ("SIM_DOWNLOAD_TRUNCATE_RATE", "SIM_URL_EARLY_EXPIRE_RATE", "SIM_GET_RESULT_ERROR_RATE"):
        with pytest.raises(ConfigError, match=name):
            SimSettings.from_env({name: "1.5"})
    for name in ("SIM_WEBHOOK_REORDER_S", "SIM_GET_RESULT_ERROR_S"):
        with pytest.raises(ConfigError, match=name):
            SimSettings.from_env({name: "-1"})


def test_task_durations_vary_by_prompt_and_repeat_for_the_same_prompt() -> None:
    from receiver.simulator.state import task_duration

    settings = SimSettings(latency_s=2.0, latency_max_s=6.0, seed=3)
    durations = [task_duration(f"edit {i}", settings) for i in range(50)]
    assert all(2.0 <= d < 6.0 for d in durations)
    assert len(set(durations)) > 40
    assert durations == [task_duration(f"edit {i}", settings) for i in range(50)]
    assert task_duration("edit 1", SimSettings(latency_s=2.0)) == 2.0


def test_live_flavour_forgets_tasks_as_task_not_found_and_hides_new_webhook_tasks_for_a_moment(
    clock: FakeClock,
) -> None:
    state = make_state(clock, flavor="live", not_found_window_s=0.5)
    hooked = state.submit(submission(webhook_url="http://hook.test/"))
    polling = state.submit(submission())

    assert polled(state, hooked.id)["status"] == "Task not found"
    assert polled(state, polling.id)["status"] == "Pending"
    clock.advance(0.5)
    assert polled(state, hooked.id)["status"] == "Pending"


def test_live_flavour_flux2_tasks_reason_then_generate_and_finished_tasks_carry_their_cost(
    clock: FakeClock,
) -> None:
    state = make_state(clock, flavor="live", latency_s=3.0)
    task = state.submit(submission(CATALOG["flux-2-pro"]))
    kontext = state.submit(submission())

    statuses, costs = [], []
    for _ in range(3):
        running = polled(state, task.id)
        statuses.append((running["status"], polled(state, kontext.id)["status"]))
        costs.append(running.get("cost"))
        clock.advance(1.0)
    ready = polled(state, task.id)

    assert statuses == [("Pending", "Pending"), ("Reasoning", "Pending"), ("Generating", "Pending")]
    assert costs == [None] * 3  # settled only once finished
    # 3 for the first output MP, 1.5 per further output MP (1600x896: 0.43) and per input MP (1.44).
    assert (ready["status"], ready["cost"], task.cost) == ("Ready", 5.8, 5.8)


def test_flux2_output_follows_the_input_or_width_and_height_within_4_megapixels(clock: FakeClock) -> None:
    state = make_state(clock)
    flux2 = CATALOG["flux-2-flex"]
    big = InputImage(data=b"big", content_type="image/png", width=4000, height=3000)

    same = state.submit(submission(flux2))
    sized = state.submit(submission(flux2, width=512, height=0))
    capped = state.submit(submission(flux2, images=(big,)))

    assert same.output_size == (1600, 896)
    assert sized.output_size == (512, 288)
    assert capped.output_size == (2304, 1728)
    assert capped.output_mp <= 4.0


def test_every_reference_image_is_recorded_and_billed(clock: FakeClock) -> None:
    state = make_state(clock, credits=100.0)
    other = InputImage(data=b"other", content_type="image/jpeg", width=1000, height=1000)
    task = state.submit(submission(CATALOG["flux-2-max"], images=(IMAGE, other, other)))

    described = state.describe(task.id)

    assert described is not None
    assert [i["sha256"] for i in described["inputs"]] == [
        hashlib.sha256(data).hexdigest() for data in (b"input-bytes", b"other", b"other")
    ]
    assert task.input_mp == 3.44
    assert task.cost == described["cost"] == round(7.0 + 3.0 * (task.output_mp - 1 + 3.44), 2)
    assert state.credits("key") == 100.0 - task.cost


def test_a_model_without_webhooks_never_sends_one(clock: FakeClock) -> None:
    quiet = replace(PRO, name="flux-quiet", webhooks=False)
    task = make_state(clock).submit(submission(quiet, webhook_url="http://hook.test/", webhook_secret="s"))
    assert (task.webhook_url, task.webhook_secret, task.webhook_copies) == (None, None, 0)
