"""The BFL simulator over HTTP: Starlette routes around `SimState`, result downloads, webhook delivery.

Routes (the API ones also under `/v1`): `POST /<model>` for every catalog model, `GET /get_result?id=`;
`GET /results/{task_id}/sample.{jpeg|png|webp}?exp=&sig=` (signed, no key); `GET /_sim/tasks/{id}` and
`GET /_sim/stats` for tests and benchmarks.

`SIM_FLAVOR` picks whose word the answers follow where the two differ. `seed` (the default) is the seed
spec: 401 for a missing or unknown key, 404 for an unknown task, `result` only once Ready, 400 for a
request the schema admits but that cannot be run (an empty prompt, bytes that are not an image), and
only the status codes it documents (402 and 429 need their limits configured or reached). `live` is
BFL's live API as far as it is known: 403 `Not authenticated`, `Task not found` with 200, every
validation error a 422, no `polling_url` in the answer to a submit with `webhook_url` (and a short
window in which `get_result` does not know that task yet), FLUX.2 tasks going `Pending`, `Reasoning`,
`Generating`, and the settled `cost` in the `get_result` of a finished task. With `SIM_API_KEYS` set, the
live flavour also answers a key of a shape no BFL key has (`KEY_SHAPE`) with 422 `Invalid API key format`,
before it looks the key up.

A truncated download (`SIM_DOWNLOAD_TRUNCATE_RATE`) is a raw ASGI response that announces the full
`Content-Length`, sends about half the body and returns without finishing: uvicorn then logs
"ASGI callable returned without completing response." and closes the connection, so the client sees a
protocol error (httpx: `RemoteProtocolError`), never a short 200.
"""

from __future__ import annotations

import hmac
import json
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import httpx
import structlog
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from receiver.bfl.validation import (
    MAX_IMAGE_BYTES,
    EditFields,
    InputImage,
    bfl_image_slots,
    check_image_bytes,
    parse_edit,
)
from receiver.catalog import CATALOG, GUIDANCE, STEPS, Catalog, ModelSpec
from receiver.errors import InvalidRequest, PayloadTooLarge, Problem, ReceiverError, Unauthorized
from receiver.settings import SimSettings
from receiver.simulator.images import edit_image
from receiver.simulator.state import (
    Access,
    Delivery,
    InsufficientCredits,
    SimState,
    Status,
    Submission,
    Task,
    TaskRecord,
    TooManyActiveTasks,
)
from receiver.webhook_auth import body_signature

log = structlog.get_logger(__name__)

# The image field: the seed spec calls it `image`, the live API `input_image`; both are accepted.
IMAGE_KEYS = {"seed": ("image", "input_image"), "live": ("input_image", "image")}
# Fields the seed spec documents for its two Kontext paths beyond what the live API takes.
SEED_SPEC_EXTRAS = {
    "flux-kontext-pro": frozenset({STEPS, GUIDANCE}),
    "flux-kontext-max": frozenset({STEPS, GUIDANCE}),
}
# Problem kinds that break the seed spec's schema (422); any other problem of a request is a 400.
SCHEMA_PROBLEMS = frozenset(
    {
        "missing",
        "string_type",
        "int_type",
        "float_type",
        "bool_type",
        "dict_type",
        "json_invalid",
        "enum",
        "string_too_long",
        "range",
    }
)
# What a BFL API key is made of (a UUID's characters, or a URL-safe token's): a key with anything else (a
# space, quotes, a dot, a colon) or far longer is malformed.
KEY_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_BODY_BYTES = 96 * 1024 * 1024  # up to 8 images of 20 MB in base64, plus the other fields
WEBHOOK_TIMEOUT_S = 30.0
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class MalformedKey(ReceiverError):
    """An `x-key` that cannot be a BFL key (live flavour): refused before it is looked up."""


_REFUSAL_STATUS: dict[type[Exception], int] = {
    Unauthorized: 401,
    MalformedKey: 422,
    InvalidRequest: 422,
    InsufficientCredits: 402,
    PayloadTooLarge: 413,
    TooManyActiveTasks: 429,
}
_REFUSALS = tuple(_REFUSAL_STATUS)
_AZURE_ERROR = (
    '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
    "<Message>{}</Message></Error>"
)


def create_sim_app(
    settings: SimSettings,
    *,
    clock: Callable[[], float] = time.time,
    transport: httpx.AsyncBaseTransport | None = None,
    catalog: Catalog = CATALOG,
) -> Starlette:
    """The simulator app, serving every model of `catalog`; its pure state is `app.state.sim`. Run its
    lifespan (uvicorn does)."""
    state = SimState(
        settings, clock=clock, rng=random.Random(settings.seed), url_secret=secrets.token_urlsafe(32)
    )
    sim = _Simulator(settings, state, transport)
    api: list[BaseRoute] = [
        *(
            Route(f"/{model.name}", partial(sim.submit, model), methods=["POST"])
            for model in catalog.values()
        ),
        Route("/get_result", sim.get_result, methods=["GET"]),
    ]
    routes: list[BaseRoute] = [
        *api,
        Mount("/v1", routes=api),
        Route("/results/{task_id}/sample.{extension}", sim.download, methods=["GET"]),
        Route("/_sim/tasks/{task_id}", sim.describe, methods=["GET"]),
        Route("/_sim/stats", sim.stats, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=sim.lifespan, exception_handlers={404: _not_found})
    app.state.sim = state
    return app


class _Simulator:
    def __init__(
        self, settings: SimSettings, state: SimState, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self.settings = settings
        self.state = state
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._tasks: TaskGroup | None = None
        self._rendering: dict[str, anyio.Event] = {}

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with (
            httpx.AsyncClient(transport=self._transport, timeout=WEBHOOK_TIMEOUT_S, limits=limits) as client,
            anyio.create_task_group() as tasks,
        ):
            self._client, self._tasks = client, tasks
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                self._client = self._tasks = None

    # -- API ------------------------------------------------------------------------------------

    async def submit(self, model: ModelSpec, request: Request) -> Response:
        flavor = self.settings.flavor
        try:
            account = self._account(request)
            payload = await _read_json(request)
            find_images = bfl_image_slots(model, IMAGE_KEYS[flavor])
            accepts = model.fields | (
                SEED_SPEC_EXTRAS.get(model.name, frozenset()) if flavor == "seed" else frozenset()
            )
            fields = parse_edit(payload, model, find_images, accepts=accepts)
            images = await self._input_images(fields, [slot.loc for slot in find_images(payload)[1]])
            base_url = self._base_url(request)
            task = self.state.submit(Submission(account, model, fields, images, base_url))
        except _REFUSALS as exc:
            self.state.stats.rejected += 1
            return self._refusal(exc)
        record = self.state.record(task.id)
        if record is not None and task.outcome is Status.READY:
            # Rendered while the task is Pending, as BFL does: the result exists once it says Ready.
            self._background().start_soon(self._output, record)
        if task.webhook_copies:
            self._background().start_soon(self._deliver, task)
        log.info("sim.task.submitted", task_id=task.id, model=model.name, outcome=task.outcome.value)
        answer: dict[str, Any] = {"id": task.id, "polling_url": f"{base_url}/v1/get_result?id={task.id}"}
        if flavor == "live" and task.webhook_url is not None:
            answer = {"id": task.id, "status": Status.PENDING.value, "webhook_url": task.webhook_url}
        cost = model.credits(task.input_mp, task.output_mp)
        return JSONResponse(answer | {"cost": cost, "input_mp": task.input_mp, "output_mp": task.output_mp})

    async def get_result(self, request: Request) -> Response:
        try:
            self._account(request)
        except (Unauthorized, MalformedKey) as exc:
            return self._refusal(exc)
        task_id = request.query_params.get("id")
        if not task_id:
            if self.settings.flavor == "seed":  # the seed spec documents 404, not 422, for get_result
                return JSONResponse({"detail": "Task not found"}, status_code=404)
            problem = Problem(("query", "id"), "Field required", "missing")
            return JSONResponse({"detail": [problem.as_dict()]}, status_code=422)
        if self.state.get_result_fails():
            log.info("sim.get_result.failed", task_id=task_id)
            return JSONResponse({"detail": "Internal Server Error"}, status_code=500)
        body = self.state.poll(task_id)
        if body is None:
            return JSONResponse({"detail": "Task not found"}, status_code=404)
        return JSONResponse(body)

    async def download(self, request: Request) -> Response:
        task_id, extension = request.path_params["task_id"], request.path_params["extension"]
        params = request.query_params
        exp, sig = params.get("exp", ""), params.get("sig", "")
        access, record = self.state.open_sample(task_id, extension, exp, sig)
        if access is Access.FORBIDDEN:
            return _azure_forbidden("Signature did not match.")
        if access is Access.EXPIRED:
            return _azure_forbidden("Signed expiry time has passed.")
        if access is Access.UNAVAILABLE:
            return Response("Service Unavailable", status_code=503, headers={"Retry-After": "1"})
        if access not in (Access.OK, Access.TRUNCATED) or record is None:
            return Response("The specified blob does not exist.", status_code=404)
        output = await self._output(record)
        if access is Access.TRUNCATED:
            log.info("sim.download.truncated", task_id=task_id, bytes=len(output))
            return _TruncatedResponse(output, media_type=CONTENT_TYPES[extension])
        return Response(output, media_type=CONTENT_TYPES[extension])

    async def describe(self, request: Request) -> Response:
        described = self.state.describe(request.path_params["task_id"])
        if described is None:
            return JSONResponse({"detail": "Task not found"}, status_code=404)
        return JSONResponse(described)

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.state.stats.as_dict())

    # -- helpers --------------------------------------------------------------------------------

    def _account(self, request: Request) -> str:
        key = request.headers.get("x-key", "")
        if not key:
            raise Unauthorized("Not authenticated")
        allowed = self.settings.api_keys
        if allowed and self.settings.flavor == "live" and not KEY_SHAPE.fullmatch(key):
            raise MalformedKey("Invalid API key format")
        if allowed and not any(hmac.compare_digest(key.encode(), known.encode()) for known in allowed):
            raise Unauthorized("Not authenticated" if self.settings.flavor == "live" else "Invalid API key")
        return key

    def _refusal(self, exc: Exception) -> JSONResponse:
        live = self.settings.flavor == "live"
        if isinstance(exc, InvalidRequest):
            if not live and not any(problem.type in SCHEMA_PROBLEMS for problem in exc.problems):
                return JSONResponse({"detail": str(exc)}, status_code=400)
            return JSONResponse({"detail": [problem.as_dict() for problem in exc.problems]}, status_code=422)
        status = 403 if live and isinstance(exc, Unauthorized) else _REFUSAL_STATUS[type(exc)]
        return JSONResponse({"detail": str(exc)}, status_code=status)

    def _base_url(self, request: Request) -> str:
        return self.settings.public_url or str(request.base_url).rstrip("/")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the simulator's lifespan is not running")
        return self._client

    def _background(self) -> TaskGroup:
        if self._tasks is None:
            raise RuntimeError("the simulator's lifespan is not running")
        return self._tasks

    async def _input_images(
        self, fields: EditFields, locs: list[tuple[str | int, ...]]
    ) -> tuple[InputImage, ...]:
        """Every input image decoded, those given by URL fetched first."""
        return tuple(
            [
                image if isinstance(image, InputImage) else await self._fetch_image(image, loc)
                for image, loc in zip(fields.images, locs, strict=True)
            ]
        )

    async def _fetch_image(self, url: str, loc: tuple[str | int, ...]) -> InputImage:
        def problem(message: str) -> InvalidRequest:
            return InvalidRequest([Problem(loc, message, "image_fetch")])

        data = bytearray()
        try:
            async with self._http().stream("GET", url, follow_redirects=True) as response:
                if response.status_code != 200:
                    raise problem(f"could not fetch the image: HTTP {response.status_code}")
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_IMAGE_BYTES:
                        raise problem(f"image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MB")
        except httpx.HTTPError as exc:
            raise problem(f"could not fetch the image: {type(exc).__name__}") from None
        try:
            return check_image_bytes(bytes(data))
        except ValueError as exc:
            raise InvalidRequest([Problem(loc, str(exc), "image_invalid")]) from None

    async def _output(self, record: TaskRecord) -> bytes:
        """The edited image, rendered off the event loop the first time anyone asks for it."""
        task = record.task
        while record.output is None:
            busy = self._rendering.get(task.id)
            if busy is not None:
                await busy.wait()
                continue
            busy = self._rendering[task.id] = anyio.Event()
            try:
                assert record.source is not None
                render = partial(edit_image, record.source, task.prompt, task.seed, task.output_size)
                record.keep_output(await anyio.to_thread.run_sync(render, task.output_format))
            finally:
                del self._rendering[task.id]
                busy.set()
        return record.output

    # -- webhooks -------------------------------------------------------------------------------

    async def _deliver(self, task: Task) -> None:
        due = task.ready_at + self.settings.webhook_delay_s
        if not any(task.webhook_holds):  # no reordering: the copies go out one after the other
            await self._sleep_until(due)
            for copy in range(1, task.webhook_copies + 1):
                await self._deliver_copy(task, copy)
            return
        # Reordered: each copy is held back by its own time and delivered on its own, so a second
        # copy may arrive before the first, and a later task's webhook before an earlier one's.
        async with anyio.create_task_group() as copies:
            for copy, hold in enumerate(task.webhook_holds, start=1):
                copies.start_soon(self._deliver_copy, task, copy, due + hold)

    async def _sleep_until(self, due: float) -> None:
        # Sleeps in real time: webhooks go out on schedule only when `clock` follows the wall clock. The
        # event loop's timer can wake a hair early by `clock`, and a webhook sent before `ready_at` would
        # announce a task the simulator still counts as active: sleep again until it is really due.
        while (left := due - self.state.clock()) > 0:  # noqa: ASYNC110 - re-sleeps an early timer, no polling
            await anyio.sleep(left)

    async def _deliver_copy(self, task: Task, copy: int, due: float | None = None) -> None:
        if due is not None:
            await self._sleep_until(due)
        for attempt, delay in enumerate((0.0, *self.settings.webhook_retry_delays), start=1):
            await anyio.sleep(delay)
            if self.state.record(task.id) is None:
                return  # forgotten: BFL would not retry for a task it no longer has
            status, error = await self._post_webhook(task)
            self.state.record_delivery(task.id, Delivery(copy, attempt, status, error, self.state.clock()))
            if status is not None and 200 <= status < 300:
                log.info("sim.webhook.delivered", task_id=task.id, copy=copy, attempt=attempt)
                return
            log.info("sim.webhook.failed", task_id=task.id, attempt=attempt, status=status, error=error)
        self.state.stats.webhooks_failed += 1
        log.warning("sim.webhook.gave_up", task_id=task.id, copy=copy)

    async def _post_webhook(self, task: Task) -> tuple[int | None, str | None]:
        assert task.webhook_url is not None
        body = json.dumps(self.state.webhook_body(task)).encode()
        headers = {"Content-Type": "application/json"}
        if task.webhook_secret:
            headers["X-Webhook-Secret"] = task.webhook_secret
            if self.settings.webhook_shape == "documented":
                headers["X-BFL-Signature"] = body_signature(task.webhook_secret, body)
        try:
            response = await self._http().post(task.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
        return response.status_code, None


async def _read_json(request: Request) -> Any:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLarge("Request body too large")
    try:
        return json.loads(body)
    except ValueError:
        raise InvalidRequest([Problem(("body",), "JSON decode error", "json_invalid")]) from None


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": "Not Found"}, status_code=404)


class _TruncatedResponse(Response):
    """Announces the whole body's `Content-Length` but sends only about half of it, and never ends
    the response: the server closes the connection and the client sees an incomplete body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send(
            {"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True}
        )


def _azure_forbidden(message: str) -> Response:
    return Response(_AZURE_ERROR.format(message), status_code=403, media_type="application/xml")
