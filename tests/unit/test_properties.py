"""Property tests (hypothesis, derandomized: the same examples every run) of the pure parts: parsers
that raise nothing outside our exception tree for any input, and a job state machine that only moves
forward and announces its outcome exactly once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver import lifecycle
from receiver.bfl.sansio import Report, Submitted, TaskReport, parse_result, parse_webhook
from receiver.errors import ConfigError, DownloadError, InvalidRequest, ReceiverError, UpstreamError
from receiver.hosts import check_resolved, check_url, parse_patterns
from receiver.lifecycle import Policy
from receiver.models import FINAL_STATES, EditRequest, ImageInfo, Job, JobState, Transition, Via
from receiver.web.schemas import EDIT_BODIES, JobQuery, JobsQuery, validate

PROPERTIES = settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
# Bodies shaped like the real ones, with any value in any known field.
WEBHOOK_KEYS = ["task_id", "id", "status", "result", "details", "timestamp", "progress", "error", "message"]
EDIT_KEYS = [
    "prompt",
    "image",
    "image_url",
    "model",
    "aspect_ratio",
    "seed",
    "output_format",
    "safety_tolerance",
    "prompt_upsampling",
    "metadata",
    "images",
    "width",
    "height",
    "steps",
    "guidance",
]


def shaped(keys: list[str]) -> st.SearchStrategy[Any]:
    return st.dictionaries(st.sampled_from(keys), JSON, max_size=len(keys)) | JSON


def only_our_errors(call: Callable[[], object], allowed: type[ReceiverError] = ReceiverError) -> None:
    """Anything but `allowed` (our tree, or one branch of it) propagates and fails the property."""
    with contextlib.suppress(allowed):
        call()


@PROPERTIES
@given(shaped(WEBHOOK_KEYS))
def test_parse_webhook_raises_only_our_errors(body: Any) -> None:
    only_our_errors(lambda: parse_webhook(body))


@PROPERTIES
@given(st.sampled_from([200, 404, 429, 500]), shaped(WEBHOOK_KEYS))
def test_parse_result_raises_only_our_errors(status: int, body: Any) -> None:
    only_our_errors(lambda: parse_result(status, body))


@PROPERTIES
@given(shaped(EDIT_KEYS))
def test_edit_validation_raises_only_invalid_request(body: Any) -> None:
    only_our_errors(lambda: EDIT_BODIES.parse(body), InvalidRequest)


@PROPERTIES
@given(st.dictionaries(st.sampled_from(["state", "delivery", "limit", "offset", "wait", "x"]), st.text()))
def test_query_validation_raises_only_invalid_request(query: dict[str, str]) -> None:
    only_our_errors(lambda: validate(JobsQuery, query, "query"), InvalidRequest)
    only_our_errors(lambda: validate(JobQuery, query, "query"), InvalidRequest)


URLISH = st.text() | st.builds(
    "{}://{}{}/{}".format,
    st.sampled_from(["http", "https", "ftp", "HTTP", ""]),
    st.text(max_size=30),
    st.sampled_from(["", ":0", ":443", ":99999", ":x", "]"]),
    st.text(max_size=10),
)
PATTERNS = ("*.bfl.ai", "127.0.0.1:8080", "[::1]", "images.example")


@PROPERTIES
@given(URLISH)
def test_sample_url_checks_raise_only_our_errors(url: str) -> None:
    only_our_errors(lambda: check_url(url, PATTERNS))


@PROPERTIES
@given(st.text(max_size=40), st.lists(st.text(max_size=40), max_size=3))
def test_resolved_address_checks_raise_only_our_errors(host: str, addresses: list[str]) -> None:
    only_our_errors(lambda: check_resolved(host, addresses, PATTERNS))


@PROPERTIES
@given(st.lists(st.text(max_size=30), min_size=1, max_size=3))
def test_allowlist_entries_are_patterns_or_a_config_error(entries: list[str]) -> None:
    only_our_errors(lambda: parse_patterns(tuple(entries)), ConfigError)


# --- the job state machine ------------------------------------------------------------------------------

POLICY = Policy(source="urn:test", reconcile_after_s=60, give_up_after_s=1800, lease_s=120)
T0 = 1_700_000_000.0
RANK = {
    JobState.CREATED: 0,
    JobState.SUBMITTED: 1,
    JobState.RECEIVED: 2,
    JobState.STORED: 3,
    JobState.FAILED: 3,
    JobState.MODERATED: 3,
    JobState.EXPIRED: 3,
    JobState.PUBLISHED: 4,
}
IMAGE = ImageInfo("file:///x.png", "ab" * 32, 10, "image/png", 1, 1)
SAMPLE = "https://delivery-eu1.bfl.ai/x.png"

reports = st.builds(
    TaskReport,
    report=st.sampled_from(Report),
    task_id=st.sampled_from([None, "task-1", "task-2"]),
    status=st.sampled_from(["Ready", "Error", "Pending", "Request Moderated", "Task not found"]),
    sample=st.sampled_from([None, SAMPLE]),
)
Step = Callable[[Job, float], Transition | None]
steps: st.SearchStrategy[Step] = st.one_of(
    st.builds(
        lambda s: lambda j, now: lifecycle.submitted(j, s, now, POLICY),
        st.builds(Submitted, st.sampled_from(["task-1", "task-2"]), st.none()),
    ),
    st.builds(
        lambda status, retryable: (
            lambda j, now: lifecycle.submit_refused(
                j, UpstreamError(status, "no", retryable=retryable), now, POLICY
            )
        ),
        st.sampled_from([402, 429, 500]),
        st.booleans(),
    ),
    st.builds(
        lambda r, via: lambda j, now: lifecycle.reported(j, r, via, now, POLICY),
        reports,
        st.sampled_from(Via),
    ),
    st.just(lambda j, now: lifecycle.still_running(j, now, POLICY)),
    st.builds(lambda r: lambda j, now: lifecycle.sample_refreshed(j, r, now, POLICY), reports),
    st.just(lambda j, now: lifecycle.stored(j, IMAGE, now, POLICY)),
    st.builds(
        lambda retryable, expired: (
            lambda j, now: lifecycle.download_failed(
                j, DownloadError("x", retryable=retryable, url_expired=expired), now, POLICY
            )
        ),
        st.booleans(),
        st.booleans(),
    ),
    st.just(lambda j, now: lifecycle.task_gone(j, now, POLICY)),
    st.just(lambda j, now: lifecycle.input_unavailable(j, "gone", now, POLICY)),
    st.builds(
        lambda s: lambda j, now: lifecycle.step_crashed(j, s, "boom", now, POLICY), st.sampled_from(JobState)
    ),
    st.just(lambda j, now: lifecycle.published(j, now)),
)


@PROPERTIES
@given(st.lists(st.tuples(steps, st.floats(0, 3000)), max_size=25))
def test_a_job_only_moves_forward_and_announces_its_outcome_once(history: list[tuple[Step, float]]) -> None:
    job = lifecycle.new_job("job-1", EditRequest("p"), T0)
    now, events = T0, 0
    for step, elapsed in history:
        now += elapsed
        transition = step(job, now)
        if transition is None:
            continue
        after = transition.job
        assert RANK[after.state] >= RANK[job.state], (job.state, after.state)
        if job.state in FINAL_STATES:
            assert after.state in FINAL_STATES and (
                after.state is job.state or after.state is JobState.PUBLISHED
            )
        events += transition.event is not None
        job = after
    assert events == (1 if job.state in FINAL_STATES else 0)
