"""Dashboard sessions: an itsdangerous-signed, HttpOnly, SameSite=Strict cookie, and its CSRF token.

The cookie holds a fingerprint of the API token signed in with (never the token), so removing a token
from RECEIVER_API_TOKENS ends its sessions, plus a random CSRF token that every write must present.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from receiver.errors import Forbidden, Unauthorized
from receiver.settings import Settings

COOKIE = "kr_session"
MAX_AGE_S = 12 * 3600
CSRF_HEADER = "x-csrf-token"
READS = frozenset({"GET", "HEAD"})
_SALT = "kontext-receiver.ui-session"


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Sessions:
    """The sessions of one app, with what checking them needs made once: the serializer, and the
    fingerprints of the tokens that may sign in."""

    def __init__(self, settings: Settings) -> None:
        # itsdangerous signs with the last key and verifies with all: the first configured key signs.
        self._serializer = URLSafeTimedSerializer(list(reversed(settings.signing_keys)), salt=_SALT)
        self._fingerprints = [fingerprint(token).encode() for token in settings.api_tokens]
        self._secure = settings.public_url.startswith("https://")

    def start(self, response: Response, token: str) -> str:
        """Set a new session cookie on `response` for `token`; return the session's CSRF token."""
        csrf = secrets.token_urlsafe(24)
        value = self._serializer.dumps({"t": fingerprint(token), "c": csrf})
        response.set_cookie(
            COOKIE, value, max_age=MAX_AGE_S, path="/", httponly=True, samesite="strict", secure=self._secure
        )
        return csrf

    def csrf_token(self, request: Request) -> str | None:
        """The CSRF token of the request's valid session, or None without one."""
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=MAX_AGE_S)
        except BadSignature:  # also an expired one (SignatureExpired)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        presented = str(data.get("t", "")).encode()
        if not any(hmac.compare_digest(presented, known) for known in self._fingerprints):
            return None
        return str(data["c"])

    def require(self, request: Request, presented_csrf: str | None = None) -> None:
        """A valid session, and for a write its CSRF token (`X-CSRF-Token`, or `presented_csrf` from a
        form)."""
        expected = self.csrf_token(request)
        if expected is None:
            raise Unauthorized("no valid session: sign in again")
        if request.method in READS:
            return
        presented = presented_csrf if presented_csrf is not None else request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode()):
            raise Forbidden("missing or wrong CSRF token (send the X-CSRF-Token header)")


def end(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
