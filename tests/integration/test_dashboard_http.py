"""The dashboard's HTTP side without a browser: headers, sign-in checks, thumbnails, the overview."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from PIL import Image

from receiver.web import session
from tests.integration.stack import TOKEN, stack


def test_pages_carry_a_strict_csp_and_the_sign_in_form_is_csrf_checked(tmp_path: Path) -> None:
    with stack(tmp_path) as running, httpx.Client(base_url=running.url) as browser:
        page = browser.get("/ui/")
        assert page.status_code == 200 and 'name="token"' in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        nonce = browser.cookies["kr_signin"]
        assert browser.post("/ui/signin", data={"token": TOKEN, "csrf": "stale"}).status_code == 403
        signed = browser.post("/ui/signin", data={"token": TOKEN, "csrf": nonce})
        assert signed.status_code == 303 and "kr_session" in browser.cookies
        dashboard = browser.get("/ui/")
        assert "csrf-token" in dashboard.text and 'name="token"' not in dashboard.text
        assert browser.get("/v1/overview").status_code == 200  # the cookie stands in for the token
        assert browser.get("/ui/static/app.css").headers["content-type"].startswith("text/css")
        assert browser.get("/ui/static/nope.js").status_code == 404
        assert browser.get("/ui/static/..%2Fsession.py").status_code == 404
        browser.cookies.set("kr_session", "forged")
        assert browser.get("/ui/jobs/anything").status_code == 303
        assert browser.get("/v1/overview").status_code == 401


def test_thumbnails_and_the_overview(tmp_path: Path) -> None:
    with stack(tmp_path) as running:
        job = running.submit()
        running.wait_state(job["id"], "published")
        for kind in ("image", "input"):
            small = running.client.get(f"/v1/jobs/{job['id']}/{kind}", params={"width": 40})
            assert small.status_code == 200 and small.headers["content-type"] == "image/webp"
            with Image.open(io.BytesIO(small.content)) as thumb:
                assert thumb.width == 40
            again = running.client.get(f"/v1/jobs/{job['id']}/{kind}", params={"width": 40})
            assert again.content == small.content
            current = {"If-None-Match": small.headers["etag"]}
            kept = running.client.get(f"/v1/jobs/{job['id']}/{kind}", params={"width": 40}, headers=current)
            assert kept.status_code == 304 and kept.content == b""
        assert running.client.get(f"/v1/jobs/{job['id']}/image", params={"width": 5}).status_code == 422
        assert running.client.get("/v1/jobs", params={"include": "everything"}).status_code == 422
        listed = running.client.get("/v1/jobs", params={"include": "deliveries"}).json()["jobs"]
        assert [d["state"] for d in listed[0]["deliveries"]] == ["delivered"]
        seen = running.client.get("/v1/overview").json()
        assert seen["jobs"]["published"] == 1 and seen["dead_letters"] == 0
        assert seen["events_per_minute"] == 1 and seen["oldest_undelivered"] == {}
        assert seen["sinks"] == {listed[0]["deliveries"][0]["sink"]: {"reachable": True}}
        assert httpx.get(f"{running.url}/v1/overview").status_code == 401


def test_a_demo_receiver_shows_the_dashboard_without_sign_in(tmp_path: Path) -> None:
    with stack(tmp_path, api_tokens=(), demo=True) as running, httpx.Client(base_url=running.url) as browser:
        page = browser.get("/ui/")
        assert page.status_code == 200 and 'name="token"' not in page.text and "dashboard.js" in page.text
        assert browser.post("/ui/signout", data={"csrf": ""}).status_code == 303
        assert browser.get("/v1/overview").status_code == 200


def test_sessions_are_checked_with_one_serializer_made_once_per_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[URLSafeTimedSerializer] = []

    class Counted(URLSafeTimedSerializer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(session, "URLSafeTimedSerializer", Counted)
    with stack(tmp_path) as running, httpx.Client(base_url=running.url) as browser:
        browser.get("/ui/")
        signed = browser.post("/ui/signin", data={"token": TOKEN, "csrf": browser.cookies["kr_signin"]})
        assert signed.status_code == 303
        for _ in range(3):
            assert browser.get("/v1/jobs").status_code == 200
            assert "csrf-token" in browser.get("/ui/").text
    assert len(made) == 1
