"""The job state machine as pure functions: each takes a job and what happened, and returns the
job's next version (with its event when the outcome is final), or None when nothing changes.

created -> submitted -> received -> stored -> published, or a final failed / moderated / expired.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from receiver.bfl.sansio import Report, Submitted, TaskReport
from receiver.errors import DownloadError, UpstreamError
from receiver.models import (
    AWAITING_UPSTREAM,
    FINAL_STATES,
    Cost,
    EditRequest,
    Event,
    ImageInfo,
    Job,
    JobState,
    StoredInput,
    Transition,
    Via,
    isotime,
)
from receiver.retry import backoff


@dataclass(frozen=True)
class Policy:
    source: str  # the CloudEvents `source` of every event
    reconcile_after_s: float = 60.0
    give_up_after_s: float = 1800.0
    lease_s: float = 120.0
    received_grace_s: float = 600.0  # BFL's signed result URLs live 10 minutes
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    poll_cap_s: float = 60.0
    # A model that sends no webhooks is polled from this long after submit, and never less often.
    follow_poll_s: float = 2.0
    # `Task not found` this soon after submit means BFL does not know the task yet, not that it is gone.
    not_found_grace_s: float = 60.0


def new_job(
    job_id: str,
    request: EditRequest,
    now: float,
    idempotency_key: str | None = None,
    fingerprint: str = "",
    inputs: tuple[StoredInput, ...] = (),
) -> Job:
    return Job(
        id=job_id,
        request=request,
        created_at=now,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        inputs=inputs,
        due_at=now,
    )


def submitted(
    job: Job,
    accepted: Submitted,
    now: float,
    policy: Policy,
    *,
    estimate: float | None = None,
    webhooks: bool = True,
) -> Transition:
    """BFL took the task. Its cost is what BFL answered (else `estimate`, the credits expected); without
    `webhooks` the task is followed by polling from the start."""
    noted = dataclasses.replace(
        job,
        submitting_until=None,
        bfl_task_id=job.bfl_task_id or accepted.task_id,
        polling_url=job.polling_url or accepted.polling_url,
        submitted_at=job.submitted_at or now,
        cost=job.cost or accepted.cost or (Cost(estimate) if estimate is not None else None),
        hold=None,
    )
    if job.state is not JobState.CREATED:
        # The webhook beat our own record of the submit: keep its outcome, just note the task.
        return Transition(noted, drop_input=True)
    first_poll = policy.reconcile_after_s if webhooks else policy.follow_poll_s
    return Transition(
        dataclasses.replace(noted, state=JobState.SUBMITTED, due_at=now + first_poll, attempts=0),
        drop_input=True,
    )


def held(job: Job, reason: dict[str, Any], until: float) -> Transition | None:
    """The job stays queued until `until`, for `reason` (shown with the job), holding no upstream slot."""
    if job.state is not JobState.CREATED:
        return None
    return Transition(dataclasses.replace(job, hold=reason, due_at=until, attempts=0, submitting_until=None))


def submit_refused(job: Job, error: UpstreamError, now: float, policy: Policy) -> Transition | None:
    if job.state is not JobState.CREATED:
        return None
    problem = {"code": "submit_refused", "status": error.status, "message": error.detail}
    if not error.retryable:
        return finish(job, JobState.FAILED, now, policy, error=problem)
    if now - job.created_at >= policy.give_up_after_s:
        return finish(job, JobState.FAILED, now, policy, error=problem | {"code": "upstream_unavailable"})
    delay = retry_delay(job, policy, error.retry_after)
    return Transition(dataclasses.replace(job, due_at=now + delay, submitting_until=None))


def input_unavailable(job: Job, message: str, now: float, policy: Policy) -> Transition | None:
    """The input image cannot be read back to submit the edit: nothing will bring it back."""
    if job.state is not JobState.CREATED:
        return None
    return finish(job, JobState.FAILED, now, policy, error={"code": "input_unavailable", "message": message})


def reported(
    job: Job, report: TaskReport, via: Via, now: float, policy: Policy, *, take: bool = False
) -> Transition | None:
    """BFL told us how the task ended, by webhook or by poll. Only the first report counts.

    With `take`, a ready job comes back already claimed by the caller, who fetches its image at once
    (no separate claim); should the caller die, the claim lapses and anyone fetches it."""
    if job.state not in AWAITING_UPSTREAM or report.report is Report.RUNNING:
        return None
    if report.task_id and job.bfl_task_id and report.task_id != job.bfl_task_id:
        return None  # about another task: not this job's outcome
    if report.report is Report.READY and report.sample is None:
        return None  # nothing to fetch yet; the reconciler asks again
    if not_known_yet(job, report, now, policy):
        return None
    settled = job.cost
    if report.cost is not None:
        settled = dataclasses.replace(job.cost, credits=report.cost) if job.cost else Cost(report.cost)
    job = dataclasses.replace(
        job,
        bfl_task_id=job.bfl_task_id or report.task_id,
        via=via,
        received_at=now,
        bfl_finished_at=report.finished_at or now,
        cost=settled,
    )
    if report.report is Report.READY:
        received = dataclasses.replace(
            job,
            state=JobState.RECEIVED,
            sample_url=report.sample,
            result=report.result,
            due_at=now,
            attempts=0,
        )
        return Transition(received.claimed(now, policy.lease_s) if take else received)
    if report.report is Report.MODERATED:
        return finish(job, JobState.MODERATED, now, policy, error=report.error)
    if report.report is Report.FAILED:
        return finish(job, JobState.FAILED, now, policy, error=report.error)
    return expire(job, now, policy, "task_not_found", "BFL no longer knows the task")


def not_known_yet(job: Job, report: TaskReport, now: float, policy: Policy) -> bool:
    """`Task not found` so soon after submit: BFL does not know the task it has just taken yet (the
    live API, for a task submitted with a webhook); ask again, as for one still running."""
    return report.report is Report.NOT_FOUND and now - (job.submitted_at or now) < policy.not_found_grace_s


def still_running(job: Job, now: float, policy: Policy, *, webhooks: bool = True) -> Transition | None:
    """A poll found the task unfinished: poll again later (soon, for a model that sends no webhooks),
    or give up at the deadline."""
    if job.state is not JobState.SUBMITTED:
        return None
    if _past_deadline(job, now, policy):
        return expire(job, now, policy, "timeout", "no result before the deadline")
    cap = policy.poll_cap_s if webhooks else policy.follow_poll_s
    delay = backoff(job.attempts + 1, policy.retry_base_s, cap, job.id)
    return Transition(dataclasses.replace(job, due_at=now + delay))


def sample_refreshed(job: Job, report: TaskReport, now: float, policy: Policy) -> Transition | None:
    """A fresh signed URL for an image whose old URL expired: try it at once the first time, later
    with backoff (a URL that keeps dying on arrival must not turn into a busy loop)."""
    if job.state is not JobState.RECEIVED or report.sample is None:
        return None
    if _past_deadline(job, now, policy):
        return expire(
            job, now, policy, "download_failed", "every sample URL expired before it could be fetched"
        )
    due_at = now if job.attempts <= 1 else now + retry_delay(job, policy)
    return Transition(dataclasses.replace(job, sample_url=report.sample, due_at=due_at))


def stored(job: Job, image: ImageInfo, now: float, policy: Policy) -> Transition | None:
    if job.state is not JobState.RECEIVED:
        return None
    return finish(dataclasses.replace(job, image=image, stored_at=now), JobState.STORED, now, policy)


def download_failed(job: Job, error: DownloadError, now: float, policy: Policy) -> Transition | None:
    """Try again later while the task may still give us the image; a refused sample is final."""
    if job.state is not JobState.RECEIVED:
        return None
    problem = {"code": "download_failed", "message": str(error)}
    if not error.retryable and not error.url_expired:
        return finish(job, JobState.FAILED, now, policy, error=problem | {"code": "sample_rejected"})
    if _past_deadline(job, now, policy):
        return finish(job, JobState.EXPIRED, now, policy, error=problem)
    return Transition(dataclasses.replace(job, due_at=now + retry_delay(job, policy, error.retry_after)))


def task_gone(job: Job, now: float, policy: Policy) -> Transition | None:
    """The sample URL expired and BFL no longer has the task: the image cannot be had any more."""
    if job.state is not JobState.RECEIVED:
        return None
    return expire(job, now, policy, "task_gone", "the sample URL expired and BFL no longer has the task")


def step_crashed(job: Job, state: JobState, message: str, now: float, policy: Policy) -> Transition | None:
    """Handling `job` in `state` raised something unexpected: try this job again alone, with backoff,
    until its deadline, where it ends like any job that ran out of time (never submitted: failed)."""
    if job.state is not state or state in FINAL_STATES:
        return None
    problem = {"code": "internal_error", "message": message}
    if state is JobState.CREATED:
        if now - job.created_at >= policy.give_up_after_s:
            return finish(job, JobState.FAILED, now, policy, error=problem)
    elif _past_deadline(job, now, policy):
        return finish(job, JobState.EXPIRED, now, policy, error=problem)
    return Transition(dataclasses.replace(job, due_at=now + retry_delay(job, policy)))


def published(job: Job, now: float) -> Transition | None:
    """Every sink has the event: a stored job is `published`; a failed, moderated or expired one keeps
    its state. Either way, when is noted (the first time: a redelivery changes nothing)."""
    if job.state not in FINAL_STATES or job.published_at is not None:
        return None
    state = JobState.PUBLISHED if job.state is JobState.STORED else job.state
    return Transition(dataclasses.replace(job, state=state, published_at=now))


def finish(
    job: Job, state: JobState, now: float, policy: Policy, error: dict[str, Any] | None = None
) -> Transition:
    done = dataclasses.replace(
        job, state=state, error=error, finished_at=now, due_at=None, attempts=0, submitting_until=None
    )
    return Transition(done, event=build_event(done, policy.source), drop_input=True)


def expire(job: Job, now: float, policy: Policy, code: str, message: str) -> Transition:
    return finish(job, JobState.EXPIRED, now, policy, error={"code": code, "message": message})


def build_event(job: Job, source: str) -> Event:
    outcome = job.outcome
    if outcome is None:
        raise ValueError(f"job {job.id} in state {job.state} has no outcome yet")
    image = dataclasses.asdict(job.image) if job.image else None
    data = {
        "job_id": job.id,
        "bfl_task_id": job.bfl_task_id,
        "model": job.request.model,
        "outcome": outcome.value,
        "prompt": job.request.prompt,
        "seed": job.result.get("seed", job.request.seed),
        "image": image,
        "error": job.error,
        "metadata": job.request.metadata,
        "via": job.via.value if job.via else None,
        "cost": dataclasses.asdict(job.cost) if job.cost else None,
        "timings": {
            "submitted_at": isotime(job.submitted_at),
            "bfl_finished_at": isotime(job.bfl_finished_at),
            "received_at": isotime(job.received_at),
            "stored_at": isotime(job.stored_at),
            "published_at": isotime(job.finished_at),
        },
    }
    return Event(
        id=job.id,
        source=source,
        type=f"kontext.edit.{outcome.value}",
        subject=job.id,
        time=isotime(job.finished_at) or "",
        data=data,
        dataref=image["url"] if image else None,
    )


def retry_delay(job: Job, policy: Policy, retry_after: float | None = None) -> float:
    return backoff(job.attempts, policy.retry_base_s, policy.retry_cap_s, job.id, retry_after)


def _past_deadline(job: Job, now: float, policy: Policy) -> bool:
    """Past the give-up deadline; a result BFL reported ready keeps at least the life of its URL."""
    deadline = (job.submitted_at or job.created_at) + policy.give_up_after_s
    if job.received_at is not None:
        deadline = max(deadline, job.received_at + policy.received_grace_s)
    return now >= deadline
