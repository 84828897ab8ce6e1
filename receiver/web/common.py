"""Request plumbing shared by the endpoints: body caps, JSON, bearer tokens, and error mapping.

This is the only place where our exceptions become HTTP statuses.
"""

from __future__ import annotations

import hmac
import math
from typing import Any

import anyio
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from receiver.bfl.sansio import decode_json
from receiver.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ReceiverError,
    RequestTimeout,
    RetryLater,
    StorageUnavailable,
    TooManyRequests,
    TransientError,
    Unauthorized,
    Unavailable,
)
from receiver.services import Services
from receiver.sinks.reachability import Reachability
from receiver.web import session
from receiver.web.limits import RequestLimits
from receiver.worker.handover import Handover

log = structlog.get_logger("receiver.web")

STATUS: dict[type[ReceiverError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    InvalidRequest: 422,
    TooManyRequests: 429,
    Unavailable: 503,
    Overloaded: 503,
    StorageUnavailable: 503,
}


def services(request: Request) -> Services:
    opened: Services = request.app.state.services
    return opened


def handover(request: Request) -> Handover:
    """The background work of this process, as far as the HTTP side may drive it."""
    work: Handover = request.app.state.scheduler
    return work


def sessions(request: Request) -> session.Sessions:
    """The dashboard's sessions, checked with what the app made once from its settings."""
    made: session.Sessions = request.app.state.sessions
    return made


def reachability(request: Request) -> Reachability:
    """Each sink's reachability, pinged at most every few seconds for all the requests of this app."""
    sinks: Reachability = request.app.state.reachability
    return sinks


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes without reading it all, and (408)
    a body that takes longer than RECEIVER_BODY_TIMEOUT_S to arrive, however slowly it trickles in."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"body is {length} bytes; the limit is {limit}")
    timeout_s = limits(request).body_timeout_s
    body = bytearray()
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLarge(f"body is over the {limit}-byte limit")
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout_s:g} s") from None
    return bytes(body)


def limits(request: Request) -> RequestLimits:
    bounds: RequestLimits = request.app.state.limits
    return bounds


def parse_json(body: bytes) -> Any:
    try:
        return decode_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def require_token(request: Request) -> None:
    """Check `Authorization: Bearer <token>` against RECEIVER_API_TOKENS, in constant time; without that
    header, a dashboard session cookie will do (and, for anything but a read, its CSRF token)."""
    settings = services(request).settings
    tokens = settings.api_tokens
    if not tokens:  # only a demo receiver runs without tokens (`Settings.check` refuses otherwise)
        return
    header = request.headers.get("authorization")
    if header is None and session.COOKIE in request.cookies:
        sessions(request).require(request)
        return
    scheme, _, presented = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    if not token_matches(tokens, presented.strip()):
        raise Unauthorized("invalid bearer token")


def token_matches(tokens: tuple[str, ...], presented: str) -> bool:
    """Whether `presented` is one of `tokens`, comparing with every one in constant time."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(token.encode(), presented.encode("utf-8", "surrogateescape"))
    return matched


async def on_receiver_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ReceiverError)
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
    if status == 500:
        log.error("http.unmapped_error", path=request.url.path, error=repr(exc))
        return JSONResponse({"detail": "internal error"}, status_code=500)
    headers = (
        {"WWW-Authenticate": "Bearer"} if status == 401 and request.url.path.startswith("/v1/") else None
    )
    if status == 408:  # the rest of the body may still be on its way: do not wait for it
        headers = {"Connection": "close"}
    if status in {429, 503}:
        retry_after = exc.retry_after if isinstance(exc, RetryLater | TransientError) else None
        headers = {"Retry-After": str(max(1, math.ceil(retry_after or 1)))}
    if isinstance(exc, InvalidRequest):
        return JSONResponse({"detail": [p.as_dict() for p in exc.problems]}, status_code=422)
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def on_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away before its request was read whole: nothing was done, and the 400 never
    reaches anyone. Not an error of ours."""
    assert isinstance(exc, ClientDisconnect)
    log.info("http.client_disconnected", method=request.method, path=request.url.path)
    return Response(status_code=400)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("http.internal_error", path=request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)
