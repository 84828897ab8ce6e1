from __future__ import annotations

import dataclasses
import io

import pytest
from PIL import Image
from starlette.requests import Request
from starlette.responses import Response

from receiver.errors import Forbidden, Unauthorized
from receiver.settings import Settings
from receiver.web import session
from receiver.web.thumbnails import thumbnail

SETTINGS = Settings(api_tokens=("token-a", "token-b"), signing_keys=("key-1",))


def request(method: str = "GET", cookie: str | None = None, csrf: str | None = None) -> Request:
    headers = []
    if cookie is not None:
        headers.append((b"cookie", f"{session.COOKIE}={cookie}".encode()))
    if csrf is not None:
        headers.append((session.CSRF_HEADER.encode(), csrf.encode()))
    return Request({"type": "http", "method": method, "headers": headers, "path": "/"})


def signed_in(sessions: session.Sessions, token: str = "token-a") -> tuple[str, str]:
    response = Response()
    csrf = sessions.start(response, token)
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header and "Secure" not in header
    assert token not in header
    return header.split(";")[0].split("=", 1)[1], csrf


def test_a_session_reads_back_and_writes_need_its_csrf_token() -> None:
    sessions = session.Sessions(SETTINGS)
    cookie, csrf = signed_in(sessions)
    assert sessions.csrf_token(request(cookie=cookie)) == csrf
    sessions.require(request(cookie=cookie))
    sessions.require(request("POST", cookie=cookie, csrf=csrf))
    with pytest.raises(Forbidden):
        sessions.require(request("POST", cookie=cookie))
    with pytest.raises(Forbidden):
        sessions.require(request("POST", cookie=cookie, csrf=csrf + "x"))


def test_tampered_foreign_or_revoked_sessions_are_refused() -> None:
    cookie, _ = signed_in(session.Sessions(SETTINGS), "token-b")
    assert session.Sessions(SETTINGS).csrf_token(request(cookie=cookie[:-2] + "xx")) is None
    other_key = session.Sessions(dataclasses.replace(SETTINGS, signing_keys=("key-2",)))
    assert other_key.csrf_token(request(cookie=cookie)) is None
    revoked = session.Sessions(dataclasses.replace(SETTINGS, api_tokens=("token-a",)))
    assert revoked.csrf_token(request(cookie=cookie)) is None
    with pytest.raises(Unauthorized):
        revoked.require(request(cookie=cookie))


def test_a_session_survives_key_rotation_and_is_secure_on_https() -> None:
    cookie, csrf = signed_in(session.Sessions(SETTINGS))
    rotated = session.Sessions(dataclasses.replace(SETTINGS, signing_keys=("key-2", "key-1")))
    assert rotated.csrf_token(request(cookie=cookie)) == csrf
    response = Response()
    session.Sessions(dataclasses.replace(SETTINGS, public_url="https://r.example")).start(response, "token-a")
    assert "Secure" in response.headers["set-cookie"]


def test_thumbnails_scale_down_never_up() -> None:
    def png(width: int, height: int) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
        return out.getvalue()

    with Image.open(io.BytesIO(thumbnail(png(800, 400), 200))) as small:
        assert (small.format, small.size) == ("WEBP", (200, 100))
    with Image.open(io.BytesIO(thumbnail(png(100, 50), 200))) as same:
        assert same.size == (100, 50)
