"""The simulator's state machine: tasks, accounts, signed result URLs and counters. No I/O.

Time comes from the injected `clock` and every fault choice from the injected `rng` (a task's at
submit time, in submit order), so a run with `SIM_SEED` set is reproducible. Faults that happen per
request (a download cut short or refused, a result URL minted already expired, a `get_result` answered
500) draw from streams of their own, so how often a client polls or downloads does not change the fault
choices of the tasks submitted after, nor those of the other kinds of request.

A task is `Pending` until `created_at + latency_s`, then shows its outcome (decided at submit) until
`task_ttl_s` after that, when it is forgotten: its id then answers `Task not found` exactly like an id
that never existed (HTTP 200 with that status, as the live API does for expired tasks).
"""

from __future__ import annotations

import hashlib
import heapq
import random
import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from itsdangerous import Signer

from receiver.bfl.validation import EditFields, InputImage
from receiver.catalog import ModelSpec
from receiver.errors import ReceiverError
from receiver.settings import SimSettings
from receiver.simulator.images import output_size, sized_output

ERROR_MESSAGE = "Simulated generation failure (SIM_ERROR_RATE)"
_LIVE_EXTRAS = ("result", "progress", "details", "preview")  # the live API sends these, null when unset


class Status(StrEnum):
    PENDING = "Pending"
    REASONING = "Reasoning"  # live flavour, FLUX.2 models: still running
    GENERATING = "Generating"
    READY = "Ready"
    ERROR = "Error"
    REQUEST_MODERATED = "Request Moderated"
    CONTENT_MODERATED = "Content Moderated"
    NOT_FOUND = "Task not found"


MODERATED = frozenset({Status.REQUEST_MODERATED, Status.CONTENT_MODERATED})
RUNNING = (Status.PENDING, Status.REASONING, Status.GENERATING)


class Access(StrEnum):
    """The verdict on a result download."""

    OK = "ok"
    FORBIDDEN = "forbidden"
    EXPIRED = "expired"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    TRUNCATED = "truncated"  # served, but the body is cut off halfway (SIM_DOWNLOAD_TRUNCATE_RATE)


class InsufficientCredits(ReceiverError):
    """The account cannot pay for the task."""


class TooManyActiveTasks(ReceiverError):
    """The account already has as many unfinished tasks as it may."""


@dataclass(frozen=True)
class Submission:
    """A validated submit, with every input image decoded (or fetched from its URL)."""

    account: str
    model: ModelSpec
    fields: EditFields
    images: tuple[InputImage, ...]
    base_url: str


@dataclass(frozen=True)
class Task:
    id: str
    account: str
    model: ModelSpec
    prompt: str
    seed: int
    created_at: float
    ready_at: float
    outcome: Status
    reasons: tuple[str, ...]
    output_format: str
    output_size: tuple[int, int]
    input_mp: float
    inputs: tuple[dict[str, Any], ...]  # what the task was given: sha256, content type, size of each image
    base_url: str
    webhook_url: str | None
    webhook_secret: str | None
    webhook_copies: int
    # Per copy, how long it is held back past `ready_at + webhook_delay_s` (SIM_WEBHOOK_REORDER_S).
    webhook_holds: tuple[float, ...] = ()

    def status_at(self, now: float, phases: tuple[Status, ...] = (Status.PENDING,)) -> Status:
        """The outcome once ready; before, the phase (of `phases`, in equal shares) the task is in."""
        if now >= self.ready_at:
            return self.outcome
        share = (now - self.created_at) / (self.ready_at - self.created_at)
        return phases[min(int(share * len(phases)), len(phases) - 1)]

    def progress_at(self, now: float) -> float:
        if now >= self.ready_at:
            return 1.0
        return round((now - self.created_at) / (self.ready_at - self.created_at), 2)

    @property
    def output_mp(self) -> float:
        width, height = self.output_size
        return round(width * height / 1_000_000, 2)

    @property
    def cost(self) -> float:
        """Credits the task costs (1 credit = 0.01 USD); moderated tasks are not charged."""
        return 0.0 if self.outcome in MODERATED else self.model.credits(self.input_mp, self.output_mp)

    def result(self, sample: str) -> dict[str, Any]:
        return {
            "sample": sample,
            "prompt": self.prompt,
            "seed": self.seed,
            "start_time": self.created_at,
            "end_time": self.ready_at,
            "duration": round(self.ready_at - self.created_at, 3),
        }


@dataclass(frozen=True)
class Delivery:
    """One webhook POST: which copy, which attempt, and the HTTP status (None on a connection error)."""

    copy: int
    attempt: int
    status: int | None
    error: str | None
    at: float


@dataclass
class TaskRecord:
    task: Task
    source: bytes | None  # the input image, released once the output exists
    output: bytes | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    polls: int = 0

    def keep_output(self, output: bytes) -> None:
        self.output = output
        self.source = None


@dataclass
class Stats:
    """Counters for `/_sim/stats`. `get_result` counts every call, `get_result_errors` those answered
    500; `webhooks_sent` counts POSTs (retries too); `webhooks_failed` counts deliveries given up after
    the last retry; `downloads` counts downloads served whole, `downloads_truncated` those cut off and
    `download_errors` every refused one; `urls_expired_early` counts result URLs minted expired;
    `peak_active` and `peak_active_kontext_max` are the most tasks one account had active at once."""

    submits: int = 0
    rejected: int = 0
    get_result: int = 0
    get_result_errors: int = 0
    webhooks_sent: int = 0
    webhooks_dropped: int = 0
    webhooks_failed: int = 0
    downloads: int = 0
    downloads_truncated: int = 0
    download_errors: int = 0
    urls_expired_early: int = 0
    peak_active: int = 0
    peak_active_kontext_max: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SampleUrls:
    """Result URLs signed over `"{task_id}:{exp}"`, where `exp` is a unix time (a float)."""

    def __init__(self, secret: str, ttl_s: float, clock: Callable[[], float]) -> None:
        self._signer = Signer(secret, salt="kontext-sim.sample", digest_method=hashlib.sha256)
        self._ttl_s = ttl_s
        self._clock = clock

    def sign(self, base_url: str, task_id: str, extension: str, *, expired: bool = False) -> str:
        """A URL valid for the TTL, or with `expired` one whose expiry has already passed."""
        exp = f"{self._clock() + (-1.0 if expired else self._ttl_s):.3f}"
        sig = self._signer.get_signature(f"{task_id}:{exp}").decode("ascii")
        return f"{base_url}/results/{task_id}/sample.{extension}?{urlencode({'exp': exp, 'sig': sig})}"

    def check(self, task_id: str, exp: str, sig: str) -> Access:
        if not self._signer.verify_signature(f"{task_id}:{exp}".encode(), sig.encode()):
            return Access.FORBIDDEN
        return Access.OK if self._clock() < float(exp) else Access.EXPIRED


def _new_id() -> str:
    return str(uuid.uuid4())


class SimState:
    def __init__(
        self,
        settings: SimSettings,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        url_secret: str,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.started_at = clock()
        self.stats = Stats()
        self.urls = SampleUrls(url_secret, settings.url_ttl_s, clock)
        self._rng = rng
        # Per-request faults draw from streams of their own (see the module docstring), all derived
        # from one draw, so that adding a stream leaves the others' choices as they were.
        streams = rng.getrandbits(64)
        self._download_rng = random.Random(streams)
        self._truncate_rng = random.Random(f"{streams}:truncate")
        self._url_rng = random.Random(f"{streams}:urls")
        self._get_result_rng = random.Random(f"{streams}:get_result")
        self._reorder_rng = random.Random(f"{streams}:reorder")
        self._new_id = new_id
        self._records: dict[str, TaskRecord] = {}
        self._forget_at: list[tuple[float, str]] = []  # a heap
        self._credits: dict[str, float] = {}
        self._active: dict[str, list[Task]] = {}

    def submit(self, submission: Submission) -> Task:
        """Admit a task or raise `InsufficientCredits` / `TooManyActiveTasks`; charge the account."""
        now = self.clock()
        self._forget_expired(now)
        model, account = submission.model, submission.account
        size, input_mp = task_size(submission)
        cost = model.credits(input_mp, round(size[0] * size[1] / 1_000_000, 2))
        balance = self.credits(account)
        if balance is not None and balance < cost:
            raise InsufficientCredits("Insufficient credits")
        active = [task for task in self._active.get(account, []) if now < task.ready_at]
        self._active[account] = active
        if len(active) >= self.settings.max_active:
            raise TooManyActiveTasks(
                f"You have reached the maximum of {self.settings.max_active} active tasks; "
                "wait for some to finish"
            )
        limit = self.settings.model_limits.get(model.name, model.active_limit)
        if limit is not None and sum(task.model.name == model.name for task in active) >= limit:
            raise TooManyActiveTasks(
                f"You have reached the maximum of {limit} active {model.name} tasks; wait for some to finish"
            )
        task = self._new_task(submission, now, size, input_mp)
        if balance is not None:
            self._credits[account] = balance - task.cost
        if task.webhook_url is not None and task.webhook_copies == 0:
            self.stats.webhooks_dropped += 1
        self._active[account].append(task)
        self.stats.peak_active = max(self.stats.peak_active, len(active))  # `task` included
        self.stats.peak_active_kontext_max = max(
            self.stats.peak_active_kontext_max,
            sum(other.model.name == "flux-kontext-max" for other in active),
        )
        self._records[task.id] = TaskRecord(task, submission.images[0].data)
        heapq.heappush(self._forget_at, (task.ready_at + self.settings.task_ttl_s, task.id))
        self.stats.submits += 1
        return task

    def credits(self, account: str) -> float | None:
        """What the account has left, or None when credits are not simulated."""
        if self.settings.credits is None:
            return None
        return self._credits.get(account, self.settings.credits)

    def record(self, task_id: str) -> TaskRecord | None:
        self._forget_expired(self.clock())
        return self._records.get(task_id)

    def get_result_fails(self) -> bool:
        """Whether this `get_result` call is answered 500: every call in the first
        `get_result_error_s` after the simulator started, and a `get_result_error_rate` share always."""
        unlucky = self._get_result_rng.random() < self.settings.get_result_error_rate
        if not (unlucky or self.clock() < self.started_at + self.settings.get_result_error_s):
            return False
        self.stats.get_result += 1
        self.stats.get_result_errors += 1
        return True

    def poll(self, task_id: str) -> dict[str, Any] | None:
        """The `get_result` body, or None for a task the seed spec answers 404 for; a Ready task gets
        a freshly signed sample URL on every call."""
        self.stats.get_result += 1
        record = self.record(task_id)
        live = self.settings.flavor == "live"
        now = self.clock()
        if record is not None and live and record.task.webhook_url is not None:
            # The live API may not know a task submitted with a webhook for a moment.
            record = record if now >= record.task.created_at + self.settings.not_found_window_s else None
        if record is None:
            if not live:
                return None
            return {"id": task_id, "status": Status.NOT_FOUND.value} | dict.fromkeys(_LIVE_EXTRAS)
        record.polls += 1
        task = record.task
        status = self.status(task)
        body: dict[str, Any] = {"id": task_id, "status": status.value}
        if live:
            body |= dict.fromkeys(_LIVE_EXTRAS)
        if status in RUNNING:
            body["progress"] = task.progress_at(now)
            return body
        if status is Status.READY:
            body["result"] = task.result(self.sample_url(task))
            body["progress"] = 1.0
        else:
            body["details"] = _details(task)
        if live:
            body["cost"] = task.cost  # settled once the task has finished
        return body

    def status(self, task: Task) -> Status:
        """What the task says now; on the live API, FLUX.2 tasks reason, then generate."""
        live_phases = self.settings.flavor == "live" and task.model.max_output_mp is not None
        return task.status_at(self.clock(), RUNNING if live_phases else (Status.PENDING,))

    def sample_url(self, task: Task) -> str:
        """A freshly signed result URL; each has its own `url_early_expire_rate` chance of being
        minted already expired."""
        expired = self._url_rng.random() < self.settings.url_early_expire_rate
        self.stats.urls_expired_early += int(expired)
        return self.urls.sign(task.base_url, task.id, task.output_format, expired=expired)

    def open_sample(
        self, task_id: str, extension: str, exp: str, sig: str
    ) -> tuple[Access, TaskRecord | None]:
        """Check a download of a signed result URL; also decides the injected 503s and truncations."""
        access = self.urls.check(task_id, exp, sig)
        record = self.record(task_id) if access is Access.OK else None
        if access is Access.OK and (
            record is None
            or record.task.status_at(self.clock()) is not Status.READY
            or record.task.output_format != extension
        ):
            access = Access.NOT_FOUND
        if access is Access.OK and self._download_rng.random() < self.settings.download_error_rate:
            access = Access.UNAVAILABLE
        if access is Access.OK and self._truncate_rng.random() < self.settings.download_truncate_rate:
            access = Access.TRUNCATED
        if access is Access.OK:
            self.stats.downloads += 1
        elif access is Access.TRUNCATED:
            self.stats.downloads_truncated += 1
        else:
            self.stats.download_errors += 1
        return access, record

    def webhook_body(self, task: Task) -> dict[str, Any]:
        """The webhook payload for a finished task, in the configured shape."""
        status = task.outcome
        if self.settings.webhook_shape == "documented":
            body: dict[str, Any] = {"id": task.id, "status": status.value}
            if status is Status.READY:
                body["result"] = task.result(self.sample_url(task))
            elif status is Status.ERROR:
                body |= {"error": "Task failed", "message": ERROR_MESSAGE}
            else:
                body["details"] = _details(task)
            body["timestamp"] = datetime.fromtimestamp(self.clock(), UTC).isoformat()
            return body
        if status is Status.READY:
            return {
                "task_id": task.id,
                "status": "SUCCESS",
                "result": task.result(self.sample_url(task)),
                "progress": 1.0,
            }
        if status is Status.ERROR:
            return {"task_id": task.id, "status": "Error", "error": ERROR_MESSAGE}
        return {"task_id": task.id, "status": status.value, "details": _details(task)}

    def record_delivery(self, task_id: str, delivery: Delivery) -> None:
        self.stats.webhooks_sent += 1
        record = self._records.get(task_id)
        if record is not None:
            record.deliveries.append(delivery)

    def describe(self, task_id: str) -> dict[str, Any] | None:
        """What `/_sim/tasks/{id}` shows: the task, its result digest, webhook attempts and polls."""
        record = self.record(task_id)
        if record is None:
            return None
        task = record.task
        return {
            "id": task.id,
            "model": task.model.name,
            "status": self.status(task).value,
            "outcome": task.outcome.value,
            "prompt": task.prompt,
            "seed": task.seed,
            "created_at": task.created_at,
            "ready_at": task.ready_at,
            "output_format": task.output_format,
            "output_size": list(task.output_size),
            "inputs": list(task.inputs),
            "cost": task.cost,
            "sha256": hashlib.sha256(record.output).hexdigest() if record.output is not None else None,
            "webhook_url": task.webhook_url,
            "webhook_copies": task.webhook_copies,
            "webhook_holds": list(task.webhook_holds),
            "webhooks": [asdict(delivery) for delivery in record.deliveries],
            "get_result_calls": record.polls,
        }

    def _new_task(self, submission: Submission, now: float, size: tuple[int, int], input_mp: float) -> Task:
        fields, settings = submission.fields, self.settings
        # Draw the same numbers for every task, whatever its fields, so one task's options do not
        # shift the fault choices of the tasks after it.
        fails, drop, duplicate = self._rng.random(), self._rng.random(), self._rng.random()
        random_seed = self._rng.randrange(2**32)
        holds = [self._reorder_rng.random() * settings.webhook_reorder_s for _ in range(2)]
        outcome, reasons = _moderation(fields.prompt, settings)
        if outcome is Status.READY and fails < settings.error_rate:
            outcome = Status.ERROR
        copies = 0
        webhook_url = fields.webhook_url if submission.model.webhooks else None
        if webhook_url is not None and drop >= settings.webhook_drop_rate:
            copies = 2 if duplicate < settings.webhook_duplicate_rate else 1
        return Task(
            id=self._new_id(),
            account=submission.account,
            model=submission.model,
            prompt=fields.prompt,
            seed=fields.seed if fields.seed is not None else random_seed,
            created_at=now,
            ready_at=now + task_duration(fields.prompt, settings),
            outcome=outcome,
            reasons=reasons,
            output_format=fields.output_format or "jpeg",
            output_size=size,
            input_mp=input_mp,
            inputs=tuple(_describe_input(image) for image in submission.images),
            base_url=submission.base_url,
            webhook_url=webhook_url,
            webhook_secret=fields.webhook_secret if webhook_url else None,
            webhook_copies=copies,
            webhook_holds=tuple(holds[:copies]),
        )

    def _forget_expired(self, now: float) -> None:
        while self._forget_at and self._forget_at[0][0] <= now:
            _, task_id = heapq.heappop(self._forget_at)
            self._records.pop(task_id, None)


def task_size(submission: Submission) -> tuple[tuple[int, int], float]:
    """The output size and the input megapixels (all images together) of a submission."""
    fields, first = submission.fields, submission.images[0]
    if submission.model.max_output_mp is None:
        size = output_size(first.width, first.height, fields.aspect_ratio)
    else:
        size = sized_output(
            (first.width, first.height),
            (fields.width or 0, fields.height or 0),
            submission.model.max_output_mp,
        )
    return size, round(sum(image.megapixels for image in submission.images), 2)


def _describe_input(image: InputImage) -> dict[str, Any]:
    return {
        "sha256": hashlib.sha256(image.data).hexdigest(),
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
    }


def _moderation(prompt: str, settings: SimSettings) -> tuple[Status, tuple[str, ...]]:
    for status, words in (
        (Status.REQUEST_MODERATED, settings.moderate_words),
        (Status.CONTENT_MODERATED, settings.content_moderate_words),
    ):
        hits = tuple(word for word in words if re.search(rf"\b{re.escape(word)}\b", prompt, re.IGNORECASE))
        if hits:
            return status, tuple(f"Blocked term: {word}" for word in hits)
    return Status.READY, ()


def _details(task: Task) -> dict[str, Any] | None:
    if task.outcome in MODERATED:
        return {"Moderation Reasons": list(task.reasons)}
    if task.outcome is Status.ERROR:
        return {"error": ERROR_MESSAGE}
    return None


def task_duration(prompt: str, settings: SimSettings) -> float:
    """How long a task stays Pending: `latency_s`, or with `latency_max_s` a time between the two that
    the prompt and seed fix, so runs that submit the same prompts see the same durations in any order."""
    if settings.latency_max_s is None or settings.latency_max_s <= settings.latency_s:
        return settings.latency_s
    fraction = zlib.crc32(f"{settings.seed}:{prompt}".encode()) / 2**32
    return settings.latency_s + fraction * (settings.latency_max_s - settings.latency_s)
