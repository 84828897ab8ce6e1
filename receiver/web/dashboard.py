"""`/ui/`: the jobs dashboard. Static HTML, CSS and vanilla JS bundled in the package; the data comes
from the `/v1/*` API and `/v1/events`, with the session cookie standing in for the bearer token."""

from __future__ import annotations

import functools
import html
import secrets
from importlib import resources
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from receiver.errors import Forbidden, NotFound
from receiver.web import session
from receiver.web.common import read_body, services, sessions, token_matches

UI = resources.files("receiver.web") / "ui"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
SIGNIN_COOKIE = "kr_signin"  # double-submit token of the sign-in form (no session exists yet)
MAX_FORM_BYTES = 8192
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@functools.cache
def _files() -> dict[str, bytes]:
    """The dashboard's files, read from the package once: they never change while it runs."""
    return {item.name: item.read_bytes() for item in UI.iterdir() if item.is_file()}


def _page(name: str, status: int = 200, **values: str) -> HTMLResponse:
    text = _files()[name].decode("utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value))
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def _signed_in(request: Request) -> str | None:
    """The session's CSRF token; "" for a demo receiver (no tokens, no sign-in); None when signed out."""
    settings = services(request).settings
    if not settings.api_tokens:
        return ""
    return sessions(request).csrf_token(request)


def _signin_page(error: str = "", status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = _page("signin.html", status, csrf=nonce, error=error)
    response.set_cookie(SIGNIN_COOKIE, nonce, max_age=3600, path="/ui/", httponly=True, samesite="strict")
    return response


async def index(request: Request) -> Response:
    csrf = _signed_in(request)
    return _signin_page() if csrf is None else _page("index.html", csrf=csrf)


async def job_page(request: Request) -> Response:
    csrf = _signed_in(request)
    if csrf is None:
        return RedirectResponse("/ui/", status_code=303)
    return _page("job.html", csrf=csrf)


async def sign_in(request: Request) -> Response:
    form = await _form(request)
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    if not nonce or not secrets.compare_digest(form.get("csrf", ""), nonce):
        raise Forbidden("the sign-in form is stale or was not sent by this dashboard: reload it")
    settings = services(request).settings
    token = form.get("token", "").strip()
    if not token or not token_matches(settings.api_tokens, token):
        return _signin_page("That token is not valid here.", status=401)
    response = RedirectResponse("/ui/", status_code=303, headers=SECURITY_HEADERS)
    sessions(request).start(response, token)
    response.delete_cookie(SIGNIN_COOKIE, path="/ui/")
    return response


async def sign_out(request: Request) -> Response:
    form = await _form(request)
    settings = services(request).settings
    if settings.api_tokens:  # a demo receiver has no sessions to end
        sessions(request).require(request, presented_csrf=form.get("csrf", ""))
    response = RedirectResponse("/ui/", status_code=303, headers=SECURITY_HEADERS)
    session.end(response)
    return response


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    kind = STATIC_TYPES.get(name[name.rfind(".") :]) if "." in name else None
    asset = _files().get(name)
    if kind is None or asset is None:
        raise NotFound(f"no dashboard file {name}")
    headers = SECURITY_HEADERS | {"Cache-Control": "no-cache"}
    return Response(asset, media_type=kind, headers=headers)


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the sign-in and sign-out forms)."""
    body = await read_body(request, MAX_FORM_BYTES)
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def to_index(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=308)


ROUTES = [
    Route("/ui", to_index, methods=["GET"]),
    Route("/ui/", index, methods=["GET"]),
    Route("/ui/jobs/{job_id}", job_page, methods=["GET"]),
    Route("/ui/signin", sign_in, methods=["POST"]),
    Route("/ui/signout", sign_out, methods=["POST"]),
    Route("/ui/static/{name}", static, methods=["GET"]),
]
