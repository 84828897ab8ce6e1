"""The job state machine, as pure functions over a fixed `now`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from receiver import lifecycle
from receiver.bfl.sansio import Report, Submitted, TaskReport
from receiver.errors import DownloadError, SampleRejected, UpstreamError
from receiver.lifecycle import Policy
from receiver.models import Cost, EditRequest, Event, ImageInfo, Job, JobState, Transition, Via
from receiver.webhook_auth import WebhookSigner

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
POLICY = Policy(source="https://receiver.example")
JOB_ID = "job-1"
SAMPLE = "https://delivery-eu1.bfl.ai/results/x/sample.jpeg?se=2023-11-14T22%3A23%3A40Z&sig=SIGNEDsig%3D"
REQUEST = EditRequest(
    prompt="Change the car color to red",
    model="flux-kontext-max",
    seed=7,
    metadata={"order": 42, "user": "ada"},
)
ACCEPTED = Submitted("task-1", "https://api.eu1.bfl.ai/v1/get_result?id=task-1", Cost(8.0, 1.02, 1.0))
IMAGE = ImageInfo(
    url="file:///data/images/job-1.jpg",
    sha256="ab" * 32,
    bytes=123_456,
    content_type="image/jpeg",
    width=1184,
    height=880,
)


def moved(transition: Transition | None) -> Job:
    assert transition is not None, "expected a transition"
    return transition.job


def final_event(transition: Transition | None) -> Event:
    assert transition is not None and transition.event is not None, "expected a final transition"
    assert transition.drop_input
    return transition.event


def created(**changes: Any) -> Job:
    return dataclasses.replace(lifecycle.new_job(JOB_ID, REQUEST, T0), **changes)


def submitted_job(at: float = T0 + 2, attempts: int = 0) -> Job:
    claimed = created().claimed(T0 + 1, POLICY.lease_s)
    return dataclasses.replace(moved(lifecycle.submitted(claimed, ACCEPTED, at, POLICY)), attempts=attempts)


def received_job(attempts: int = 1) -> Job:
    job = moved(lifecycle.reported(submitted_job(), ready(), Via.WEBHOOK, T0 + 25, POLICY))
    return dataclasses.replace(job, attempts=attempts)


def ready(cost: float | None = None) -> TaskReport:
    return TaskReport(
        Report.READY, "task-1", "Ready", sample=SAMPLE, result={"seed": 42}, finished_at=T0 + 20, cost=cost
    )


def failed() -> TaskReport:
    error = {"code": "upstream_error", "status": "Error", "message": "GPU fell over"}
    return TaskReport(Report.FAILED, "task-1", "Error", error=error, finished_at=T0 + 20)


def moderated() -> TaskReport:
    error = {"code": "moderated", "status": "Content Moderated", "reasons": ["NSFW"]}
    return TaskReport(Report.MODERATED, "task-1", "Content Moderated", error=error)


def not_found() -> TaskReport:
    return TaskReport(Report.NOT_FOUND, None, "Task not found")


def running() -> TaskReport:
    return TaskReport(Report.RUNNING, "task-1", "Pending")


# --- the happy path ----------------------------------------------------------------------------------


def test_new_job_is_created_and_due_at_once() -> None:
    job = lifecycle.new_job(JOB_ID, REQUEST, T0, idempotency_key="k", fingerprint="f")
    assert (job.state, job.due_at, job.created_at, job.attempts, job.version) == (
        JobState.CREATED,
        T0,
        T0,
        0,
        0,
    )
    assert (job.idempotency_key, job.fingerprint) == ("k", "f")


def test_claim_pushes_due_at_by_the_lease_and_counts_the_attempt() -> None:
    job = created(attempts=2)
    assert job.claimed(T0 + 5, POLICY.lease_s) == dataclasses.replace(
        job, due_at=T0 + 5 + POLICY.lease_s, attempts=3
    )


def test_happy_path_builds_the_event_when_stored() -> None:
    claimed = created().claimed(T0 + 1, POLICY.lease_s)

    sent = lifecycle.submitted(claimed, ACCEPTED, T0 + 2, POLICY)
    assert sent.event is None and sent.drop_input  # the input image is not needed any more
    job = sent.job
    assert (job.state, job.bfl_task_id, job.polling_url) == (
        JobState.SUBMITTED,
        "task-1",
        ACCEPTED.polling_url,
    )
    assert (job.submitted_at, job.due_at, job.attempts) == (T0 + 2, T0 + 2 + POLICY.reconcile_after_s, 0)

    got = lifecycle.reported(job, ready(), Via.WEBHOOK, T0 + 25, POLICY)
    assert got is not None and got.event is None
    job = got.job
    assert (job.state, job.sample_url, job.result, job.via) == (
        JobState.RECEIVED,
        SAMPLE,
        {"seed": 42},
        Via.WEBHOOK,
    )
    assert (job.received_at, job.bfl_finished_at, job.due_at, job.attempts) == (T0 + 25, T0 + 20, T0 + 25, 0)

    job = job.claimed(T0 + 26, POLICY.lease_s)
    done = lifecycle.stored(job, IMAGE, T0 + 30, POLICY)
    event = final_event(done)
    assert done is not None
    job = done.job
    assert (job.state, job.image, job.stored_at, job.finished_at, job.due_at) == (
        JobState.STORED,
        IMAGE,
        T0 + 30,
        T0 + 30,
        None,
    )
    assert event.to_dict() == {
        "specversion": "1.0",
        "id": JOB_ID,
        "source": "https://receiver.example",
        "type": "kontext.edit.completed",
        "subject": JOB_ID,
        "time": "2023-11-14T22:13:50.000Z",
        "datacontenttype": "application/json",
        "dataref": IMAGE.url,
        "data": {
            "job_id": JOB_ID,
            "bfl_task_id": "task-1",
            "model": "flux-kontext-max",
            "outcome": "completed",
            "prompt": "Change the car color to red",
            "seed": 42,  # the seed BFL used, over the one requested
            "image": dataclasses.asdict(IMAGE),
            "error": None,
            "metadata": {"order": 42, "user": "ada"},
            "via": "webhook",
            "cost": {"credits": 8.0, "input_mp": 1.02, "output_mp": 1.0},
            "timings": {
                "submitted_at": "2023-11-14T22:13:22.000Z",
                "bfl_finished_at": "2023-11-14T22:13:40.000Z",
                "received_at": "2023-11-14T22:13:45.000Z",
                "stored_at": "2023-11-14T22:13:50.000Z",
                "published_at": "2023-11-14T22:13:50.000Z",
            },
        },
    }

    after = lifecycle.published(job, T0 + 31)
    assert after is not None and after.event is None
    assert (after.job.state, after.job.published_at) == (JobState.PUBLISHED, T0 + 31)


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.MODERATED, JobState.EXPIRED])
def test_an_outcome_without_image_notes_when_every_sink_had_its_event(state: JobState) -> None:
    job = moved(lifecycle.finish(submitted_job(), state, T0 + 20, POLICY, error={"code": "x"}))
    after = moved(lifecycle.published(job, T0 + 21))
    assert (after.state, after.finished_at, after.published_at) == (state, T0 + 20, T0 + 21)
    assert lifecycle.published(after, T0 + 40) is None  # a redelivery keeps the first time


def test_event_falls_back_to_the_requested_seed() -> None:
    job = dataclasses.replace(received_job(), result={})
    assert final_event(lifecycle.stored(job, IMAGE, T0 + 30, POLICY)).data["seed"] == 7


def test_no_secret_reaches_the_event() -> None:
    webhook_secret = WebhookSigner(["signing-key"]).secret_for(JOB_ID)
    event = final_event(lifecycle.stored(received_job(), IMAGE, T0 + 30, POLICY))
    text = json.dumps(event.to_dict())
    for secret in (webhook_secret, "signing-key", "SIGNEDsig", SAMPLE):
        assert secret not in text


def test_build_event_refuses_a_job_without_outcome() -> None:
    with pytest.raises(ValueError, match="no outcome"):
        lifecycle.build_event(received_job(), POLICY.source)


@pytest.mark.parametrize(
    ("step", "state"),
    [
        (lambda job: lifecycle.stored(job, IMAGE, T0, POLICY), JobState.SUBMITTED),
        (lambda job: lifecycle.published(job, T0), JobState.RECEIVED),
        (lambda job: lifecycle.task_gone(job, T0, POLICY), JobState.SUBMITTED),
        (lambda job: lifecycle.still_running(job, T0, POLICY), JobState.RECEIVED),
        (lambda job: lifecycle.sample_refreshed(job, ready(), T0, POLICY), JobState.SUBMITTED),
        (
            lambda job: lifecycle.download_failed(job, DownloadError("x", retryable=True), T0, POLICY),
            JobState.SUBMITTED,
        ),
        (
            lambda job: lifecycle.submit_refused(job, UpstreamError(503, "x", retryable=True), T0, POLICY),
            JobState.FAILED,
        ),
    ],
    ids=[
        "stored",
        "published",
        "task_gone",
        "still_running",
        "sample_refreshed",
        "download_failed",
        "refused",
    ],
)
def test_steps_out_of_order_change_nothing(step: Callable[[Job], Transition | None], state: JobState) -> None:
    assert step(created(state=state)) is None


# --- reports: webhook or poll ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "state", "event_type", "error"),
    [
        (failed(), JobState.FAILED, "kontext.edit.failed", failed().error),
        (moderated(), JobState.MODERATED, "kontext.edit.moderated", moderated().error),
        (
            not_found(),
            JobState.EXPIRED,
            "kontext.edit.expired",
            {"code": "task_not_found", "message": "BFL no longer knows the task"},
        ),
    ],
    ids=["failed", "moderated", "not-found"],
)
def test_unsuccessful_report_is_final_with_an_event(
    report: TaskReport, state: JobState, event_type: str, error: dict[str, Any]
) -> None:
    policy = dataclasses.replace(POLICY, not_found_grace_s=20.0)  # `Task not found` 28 s after submit
    transition = lifecycle.reported(submitted_job(), report, Via.POLL, T0 + 30, policy)
    event = final_event(transition)
    job = moved(transition)
    assert (job.state, job.error, job.finished_at, job.due_at, job.via) == (
        state,
        error,
        T0 + 30,
        None,
        Via.POLL,
    )
    body = event.to_dict()
    assert (body["type"], body["id"], body["subject"]) == (event_type, JOB_ID, JOB_ID)
    assert "dataref" not in body
    assert body["data"]["outcome"] == state.value
    assert (body["data"]["image"], body["data"]["error"], body["data"]["via"]) == (None, error, "poll")
    assert body["data"]["bfl_task_id"] == "task-1"
    assert body["time"] == "2023-11-14T22:13:50.000Z"


@pytest.mark.parametrize("job", [created(), submitted_job()], ids=["created", "submitted"])
def test_ready_report_without_a_sample_never_makes_a_received_job_without_url(job: Job) -> None:
    report = dataclasses.replace(ready(), sample=None)
    transition = lifecycle.reported(job, report, Via.POLL, T0 + 30, POLICY)
    assert transition is None or transition.job.sample_url is not None


def test_report_without_finish_time_takes_the_receive_time() -> None:
    job = moved(lifecycle.reported(submitted_job(), moderated(), Via.WEBHOOK, T0 + 30, POLICY))
    assert job.bfl_finished_at == T0 + 30


@pytest.mark.parametrize("state", [JobState.CREATED, JobState.SUBMITTED])
def test_running_report_changes_nothing(state: JobState) -> None:
    assert lifecycle.reported(created(state=state), running(), Via.WEBHOOK, T0 + 3, POLICY) is None


@pytest.mark.parametrize("report", [ready(), failed(), moderated(), not_found()], ids=lambda r: r.status)
def test_only_the_first_report_counts(report: TaskReport) -> None:
    first = moved(lifecycle.reported(submitted_job(), ready(), Via.WEBHOOK, T0 + 25, POLICY))
    assert lifecycle.reported(first, report, Via.POLL, T0 + 26, POLICY) is None
    finished = moved(lifecycle.reported(submitted_job(), failed(), Via.WEBHOOK, T0 + 25, POLICY))
    assert lifecycle.reported(finished, report, Via.WEBHOOK, T0 + 26, POLICY) is None


def test_webhook_racing_the_submitter_keeps_its_outcome() -> None:
    claimed = created().claimed(T0 + 1, POLICY.lease_s)  # the submit is in flight
    early = moved(lifecycle.reported(claimed, ready(), Via.WEBHOOK, T0 + 3, POLICY))
    assert (early.state, early.bfl_task_id, early.sample_url, early.due_at) == (
        JobState.RECEIVED,
        "task-1",
        SAMPLE,
        T0 + 3,
    )

    late = lifecycle.submitted(early, ACCEPTED, T0 + 4, POLICY)
    assert late.event is None and late.drop_input
    assert late.job == dataclasses.replace(
        early, polling_url=ACCEPTED.polling_url, submitted_at=T0 + 4, cost=ACCEPTED.cost
    )


def test_failure_racing_the_submitter_is_not_reopened() -> None:
    claimed = created().claimed(T0 + 1, POLICY.lease_s)
    early = lifecycle.reported(
        claimed, dataclasses.replace(failed(), task_id=None), Via.WEBHOOK, T0 + 3, POLICY
    )
    final_event(early)
    late = lifecycle.submitted(moved(early), ACCEPTED, T0 + 4, POLICY)
    assert late.event is None  # exactly one event per job
    assert (late.job.state, late.job.bfl_task_id) == (JobState.FAILED, "task-1")


def test_sample_refreshed_replaces_the_url_and_makes_the_job_due() -> None:
    fresh = dataclasses.replace(ready(), sample=SAMPLE + "&fresh=1")
    job = moved(lifecycle.sample_refreshed(received_job(attempts=1), fresh, T0 + 700, POLICY))
    assert (job.sample_url, job.due_at) == (SAMPLE + "&fresh=1", T0 + 700)
    assert lifecycle.sample_refreshed(received_job(), not_found(), T0 + 700, POLICY) is None


def test_a_url_that_keeps_expiring_is_refreshed_with_backoff() -> None:
    """Not a busy loop: from the second try on, the fresh URL waits its turn."""
    job = received_job(attempts=3)
    later = moved(lifecycle.sample_refreshed(job, ready(), T0 + 700, POLICY))
    assert later.due_at == T0 + 700 + lifecycle.retry_delay(job, POLICY)
    assert later.due_at > T0 + 700


def test_a_url_that_keeps_expiring_until_the_deadline_expires_the_job() -> None:
    transition = lifecycle.sample_refreshed(
        received_job(attempts=9), ready(), T0 + 2 + POLICY.give_up_after_s, POLICY
    )
    assert moved(transition).state is JobState.EXPIRED
    assert final_event(transition).data["error"]["code"] == "download_failed"


# --- submit refused ------------------------------------------------------------------------------------


def refuse(job: Job, status: int, at: float) -> Transition | None:
    return lifecycle.submit_refused(job, UpstreamError(status, "busy", retryable=status >= 429), at, POLICY)


def test_retryable_refusal_keeps_the_job_waiting() -> None:
    job = created(attempts=1)
    waiting = moved(refuse(job, 429, T0 + 2))
    assert waiting.state is JobState.CREATED
    assert T0 + 2 + 0.5 <= (waiting.due_at or 0) < T0 + 2 + 1.0
    assert waiting == dataclasses.replace(job, due_at=waiting.due_at)


def test_retry_backoff_grows_with_each_attempt_and_is_capped() -> None:
    delays = [lifecycle.retry_delay(created(attempts=n), POLICY) for n in range(1, 8)]
    for attempt, delay in enumerate(delays, start=1):
        base = 2.0 ** (attempt - 1)
        assert base / 2 <= delay < base
    assert delays == sorted(delays) and len(set(delays)) == len(delays)
    capped = lifecycle.retry_delay(created(attempts=40), POLICY)
    assert POLICY.retry_cap_s / 2 <= capped <= POLICY.retry_cap_s


def test_retry_jitter_is_deterministic_per_job_and_attempt() -> None:
    job = created(attempts=3)
    assert lifecycle.retry_delay(job, POLICY) == lifecycle.retry_delay(dataclasses.replace(job), POLICY)
    spread = {lifecycle.retry_delay(dataclasses.replace(job, id=f"job-{n}"), POLICY) for n in range(20)}
    assert len(spread) > 10  # jitter spreads jobs that failed together


@pytest.mark.parametrize("status", [400, 402, 403, 422])
def test_final_refusal_fails_the_job_with_the_upstream_detail(status: int) -> None:
    error = UpstreamError(status, "Insufficient credits", retryable=False)
    transition = lifecycle.submit_refused(created(attempts=1), error, T0 + 2, POLICY)
    event = final_event(transition)
    job = moved(transition)
    expected = {"code": "submit_refused", "status": status, "message": "Insufficient credits"}
    assert (job.state, job.error, job.bfl_task_id) == (JobState.FAILED, expected, None)
    assert (event.type, event.data["error"], event.data["bfl_task_id"]) == (
        "kontext.edit.failed",
        expected,
        None,
    )
    assert event.data["timings"]["submitted_at"] is None


def test_retryable_refusal_past_the_give_up_deadline_fails() -> None:
    transition = refuse(created(attempts=30), 503, T0 + POLICY.give_up_after_s)
    event = final_event(transition)
    assert moved(transition).state is JobState.FAILED
    assert event.data["error"] == {"code": "upstream_unavailable", "status": 503, "message": "busy"}
    assert moved(refuse(created(attempts=30), 503, T0 + POLICY.give_up_after_s - 1)).state is JobState.CREATED


# --- polling a task that is still running ------------------------------------------------------------------


@pytest.mark.parametrize(("attempts", "nominal"), [(0, 1.0), (1, 2.0), (3, 8.0), (6, 60.0), (40, 60.0)])
def test_still_running_polls_again_with_capped_jittered_backoff(attempts: int, nominal: float) -> None:
    job = submitted_job(attempts=attempts)
    later = moved(lifecycle.still_running(job, T0 + 100, POLICY))
    delay = (later.due_at or 0.0) - (T0 + 100)
    assert nominal / 2 <= delay <= nominal
    assert later == dataclasses.replace(job, due_at=later.due_at)
    assert moved(lifecycle.still_running(job, T0 + 100, POLICY)) == later  # reproducible per job and attempt


def test_still_running_at_the_deadline_expires() -> None:
    job = submitted_job(at=T0 + 2)
    transition = lifecycle.still_running(job, T0 + 2 + POLICY.give_up_after_s, POLICY)
    event = final_event(transition)
    assert moved(transition).state is JobState.EXPIRED
    assert event.type == "kontext.edit.expired"
    assert event.data["error"] == {"code": "timeout", "message": "no result before the deadline"}


def test_the_cost_is_the_submit_answers_or_the_estimate_and_a_report_settles_it() -> None:
    claimed = created().claimed(T0 + 1, POLICY.lease_s)
    unpriced = moved(lifecycle.submitted(claimed, Submitted("task-1", None), T0 + 2, POLICY, estimate=7.5))
    priced = submitted_job()
    settled = moved(lifecycle.reported(priced, ready(cost=7.0), Via.POLL, T0 + 20, POLICY))

    assert unpriced.cost == Cost(7.5)
    assert settled.cost == Cost(7.0, 1.02, 1.0)
    assert moved(lifecycle.reported(priced, ready(), Via.WEBHOOK, T0 + 20, POLICY)).cost == ACCEPTED.cost


def test_a_model_without_webhooks_is_polled_soon_after_submit_and_often() -> None:
    claimed = created().claimed(T0 + 1, POLICY.lease_s)
    job = moved(lifecycle.submitted(claimed, ACCEPTED, T0 + 2, POLICY, webhooks=False))
    later = moved(
        lifecycle.still_running(dataclasses.replace(job, attempts=20), T0 + 50, POLICY, webhooks=False)
    )

    assert job.due_at == T0 + 2 + POLICY.follow_poll_s
    assert (later.due_at or 0) - (T0 + 50) <= POLICY.follow_poll_s


def test_task_not_found_just_after_submit_is_not_an_outcome_but_later_it_is() -> None:
    job = submitted_job(at=T0 + 2)
    gone = TaskReport(Report.NOT_FOUND, None, "Task not found")

    assert lifecycle.not_known_yet(job, gone, T0 + 3, POLICY)
    assert lifecycle.reported(job, gone, Via.POLL, T0 + 3, POLICY) is None
    assert moved(
        lifecycle.reported(job, gone, Via.POLL, T0 + 2 + POLICY.not_found_grace_s, POLICY)
    ).state is (JobState.EXPIRED)


def test_a_held_job_waits_with_its_reason_and_submitting_clears_it() -> None:
    reason = {"code": "credit_cap", "message": "over the cap", "until": "2023-11-15T00:00:00.000Z"}
    held = moved(lifecycle.held(created().claimed(T0 + 1, POLICY.lease_s), reason, T0 + 3600))

    assert (held.state, held.hold, held.due_at, held.attempts) == (JobState.CREATED, reason, T0 + 3600, 0)
    assert moved(lifecycle.submitted(held, ACCEPTED, T0 + 3600, POLICY)).hold is None
    assert lifecycle.held(submitted_job(), reason, T0 + 3600) is None


# --- downloading the result ------------------------------------------------------------------------------


def test_rejected_download_fails_the_job() -> None:
    transition = lifecycle.download_failed(
        received_job(), SampleRejected("sample is too big"), T0 + 30, POLICY
    )
    event = final_event(transition)
    assert moved(transition).state is JobState.FAILED
    assert event.data["error"] == {"code": "sample_rejected", "message": "sample is too big"}


@pytest.mark.parametrize(
    "error",
    [DownloadError("503", retryable=True), DownloadError("403", retryable=False, url_expired=True)],
    ids=["retryable", "url-expired"],
)
def test_transient_download_failure_is_retried_later(error: DownloadError) -> None:
    job = received_job(attempts=2)
    later = moved(lifecycle.download_failed(job, error, T0 + 30, POLICY))
    assert later == dataclasses.replace(job, due_at=T0 + 30 + lifecycle.retry_delay(job, POLICY))
    assert (later.due_at or 0) > T0 + 30


def test_downloads_keep_being_retried_while_the_task_lives() -> None:
    job = received_job(attempts=50)
    transition = lifecycle.download_failed(job, DownloadError("503", retryable=True), T0 + 30, POLICY)
    assert moved(transition).state is JobState.RECEIVED
    assert transition is not None and transition.event is None


def test_download_retry_honours_retry_after() -> None:
    error = DownloadError("503", retryable=True, retry_after=120.0)
    later = moved(lifecycle.download_failed(received_job(attempts=1), error, T0 + 30, POLICY))
    assert later.due_at == T0 + 150


def test_download_failing_past_the_deadline_expires_the_job() -> None:
    error = DownloadError("503", retryable=True)
    transition = lifecycle.download_failed(received_job(), error, T0 + 2 + POLICY.give_up_after_s, POLICY)
    assert moved(transition).state is JobState.EXPIRED
    assert final_event(transition).data["error"] == {"code": "download_failed", "message": "503"}


def test_task_gone_expires_a_received_job() -> None:
    transition = lifecycle.task_gone(received_job(), T0 + 900, POLICY)
    event = final_event(transition)
    assert moved(transition).state is JobState.EXPIRED
    assert (event.type, event.data["error"]["code"]) == ("kontext.edit.expired", "task_gone")


def test_a_taken_report_comes_back_claimed_by_the_caller() -> None:
    job = moved(
        lifecycle.reported(submitted_job(attempts=4), ready(), Via.WEBHOOK, T0 + 25, POLICY, take=True)
    )
    assert (job.state, job.due_at, job.attempts) == (JobState.RECEIVED, T0 + 25 + POLICY.lease_s, 1)
    left = moved(lifecycle.reported(submitted_job(attempts=4), ready(), Via.WEBHOOK, T0 + 25, POLICY))
    assert (left.due_at, left.attempts) == (T0 + 25, 0)  # due at once, for whoever claims it


def test_a_result_reported_late_keeps_time_to_be_fetched() -> None:
    """Reported ready just before the give-up deadline: a failed download is retried, not expired."""
    late = T0 + 2 + POLICY.give_up_after_s - 5
    job = moved(lifecycle.reported(submitted_job(), ready(), Via.WEBHOOK, late, POLICY))
    error = DownloadError("503", retryable=True)
    assert moved(lifecycle.download_failed(job, error, late + 30, POLICY)).state is JobState.RECEIVED
    expired = lifecycle.download_failed(job, error, late + POLICY.received_grace_s, POLICY)
    assert moved(expired).state is JobState.EXPIRED
