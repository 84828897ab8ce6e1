"""The data the receiver keeps and emits: jobs, stored images and completion events."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

DEFAULT_MODEL = "flux-kontext-pro"


class JobState(StrEnum):
    CREATED = "created"  # accepted, waiting for a free upstream slot
    SUBMITTED = "submitted"  # BFL has the task; waiting for its webhook
    RECEIVED = "received"  # BFL said Ready; the image still has to be fetched
    STORED = "stored"  # image stored, event in the outbox
    PUBLISHED = "published"  # event delivered to every sink
    FAILED = "failed"
    MODERATED = "moderated"
    EXPIRED = "expired"


# States in which the outcome is final and its event exists.
FINAL_STATES = frozenset(
    {JobState.STORED, JobState.PUBLISHED, JobState.FAILED, JobState.MODERATED, JobState.EXPIRED}
)
# States in which BFL may still report on the task.
AWAITING_UPSTREAM = frozenset({JobState.CREATED, JobState.SUBMITTED})


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    MODERATED = "moderated"
    EXPIRED = "expired"


class Via(StrEnum):
    WEBHOOK = "webhook"
    POLL = "poll"


@dataclass(frozen=True)
class EditRequest:
    """What the backend asked for, minus the input image bytes (those go to the blob store)."""

    prompt: str
    model: str = DEFAULT_MODEL  # a name in `receiver.catalog`
    # Jobs accepted before the receiver fetched images given by URL itself passed those URLs to BFL:
    # `image_url`, the single image of requests from before `image_urls`; `image_urls`, one entry per
    # input image in BFL's order, the URL, or None for one that is stored (in `Job.inputs`, in order).
    # Newer jobs have every input image stored, and neither.
    image_url: str | None = None
    image_urls: tuple[str | None, ...] = ()
    aspect_ratio: str | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    output_format: str | None = None
    safety_tolerance: int | None = None
    prompt_upsampling: bool | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Megapixels of the input images (unknown for the images older jobs passed to BFL by URL).
    input_mp: float | None = None


@dataclass(frozen=True)
class Cost:
    """What an edit costs in credits (1 credit = 0.01 USD), as BFL answered the submit, or settled."""

    credits: float
    input_mp: float | None = None
    output_mp: float | None = None


@dataclass(frozen=True)
class ImageInfo:
    url: str
    sha256: str
    bytes: int
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class StoredInput:
    """An input image of an edit, written to the blob store when the edit was accepted: where, exactly
    what, and the URL it was fetched from (None for one given as base64)."""

    key: str
    sha256: str
    bytes: int
    content_type: str
    width: int
    height: int
    source_url: str | None = None


@dataclass(frozen=True)
class Job:
    id: str
    request: EditRequest
    created_at: float
    state: JobState = JobState.CREATED
    version: int = 0  # bumped by every store write; writes are compare-and-set on it
    idempotency_key: str | None = None
    fingerprint: str = ""
    inputs: tuple[StoredInput, ...] = ()  # in the order BFL takes them (input_image, input_image_2, ...)
    # When the next step may run. A worker claims a job by pushing this past its lease, so a claim
    # whose worker died simply falls due again.
    due_at: float | None = None
    attempts: int = 0  # tries of the current step
    # Claimed for a submit: until then (or until the submit's outcome is written) the job holds one of
    # the account's active-task slots, whichever process submits it.
    submitting_until: float | None = None
    # The credits that submit is expected to cost, with a daily cap: counted against the cap, by every
    # process sharing the store, while the claim runs.
    credit_estimate: float | None = None
    bfl_task_id: str | None = None
    polling_url: str | None = None
    submitted_at: float | None = None
    sample_url: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    bfl_finished_at: float | None = None
    received_at: float | None = None
    via: Via | None = None
    stored_at: float | None = None
    image: ImageInfo | None = None
    error: dict[str, Any] | None = None
    finished_at: float | None = None
    published_at: float | None = None
    cost: Cost | None = None
    # Why a job waits in `created` beyond the queue, e.g. {"code": "credit_cap", "message", "until"}.
    hold: dict[str, Any] | None = None

    def claimed(self, now: float, lease_s: float) -> Job:
        """This job taken for its next step: not due again until the lease runs out."""
        return dataclasses.replace(self, due_at=now + lease_s, attempts=self.attempts + 1)

    def claimed_for_submit(self, now: float, lease_s: float, estimate: float | None = None) -> Job:
        return dataclasses.replace(
            self.claimed(now, lease_s), submitting_until=now + lease_s, credit_estimate=estimate
        )

    def holds_upstream_slot(self, now: float) -> bool:
        """BFL has the task, or a submit of it may be on its way."""
        if self.state is JobState.SUBMITTED:
            return True
        return self.state is JobState.CREATED and (self.submitting_until or 0.0) > now

    @property
    def outcome(self) -> Outcome | None:
        return {
            JobState.STORED: Outcome.COMPLETED,
            JobState.PUBLISHED: Outcome.COMPLETED,
            JobState.FAILED: Outcome.FAILED,
            JobState.MODERATED: Outcome.MODERATED,
            JobState.EXPIRED: Outcome.EXPIRED,
        }.get(self.state)

    def to_doc(self) -> dict[str, Any]:
        """The job as JSON-ready data, what the stores keep (`from_doc` reads it back). Built by hand:
        `dataclasses.asdict` deep-copies every value, and this runs on every write."""
        doc = dict(self.__dict__)
        doc["request"] = dict(self.request.__dict__)
        doc["image"] = dict(self.image.__dict__) if self.image else None
        doc["inputs"] = [dict(stored.__dict__) for stored in self.inputs]
        doc["cost"] = dict(self.cost.__dict__) if self.cost else None
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Job:
        values = dict(doc)
        request = dict(values.pop("request"))
        image = values.pop("image")
        via = values.pop("via")
        inputs = values.pop("inputs", ())  # absent from jobs written before inputs went to blobs
        cost = values.pop("cost", None)  # absent from jobs written before costs were kept
        request["image_urls"] = tuple(request.get("image_urls", ()))
        return cls(
            **values | {"state": JobState(values["state"])},
            request=EditRequest(**request),
            image=ImageInfo(**image) if image else None,
            inputs=tuple(StoredInput(**stored) for stored in inputs),
            via=Via(via) if via else None,
            cost=Cost(**cost) if cost else None,
        )


@dataclass(frozen=True)
class Event:
    """A CloudEvents 1.0 event in JSON structured mode."""

    id: str
    source: str
    type: str
    subject: str
    time: str
    data: dict[str, Any]
    dataref: str | None = None
    specversion: str = "1.0"
    datacontenttype: str = "application/json"

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": self.datacontenttype,
        }
        if self.dataref is not None:
            body["dataref"] = self.dataref
        body["data"] = self.data
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Event:
        return cls(
            id=body["id"],
            source=body["source"],
            type=body["type"],
            subject=body["subject"],
            time=body["time"],
            data=body["data"],
            dataref=body.get("dataref"),
            specversion=body.get("specversion", "1.0"),
            datacontenttype=body.get("datacontenttype", "application/json"),
        )


@dataclass(frozen=True)
class Transition:
    """A job's next version and, when it reached a final state, the event announcing it."""

    job: Job
    event: Event | None = None
    drop_input: bool = False


def epoch(iso: str) -> float:
    """The inverse of `isotime`: an RFC 3339 time as epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def isotime(timestamp: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC with milliseconds, the format of every time we emit."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
