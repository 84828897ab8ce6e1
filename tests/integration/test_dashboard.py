"""The dashboard in headless Chromium: sign-in, live rows, before/after, dead letters and Redeliver.

Screenshots at desktop and phone width go to build/screenshots/ (docs/dashboard.png is made from one).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.browser import chromium
from tests.integration.contrast import contrast_failures
from tests.integration.stack import FAST_SIM, TOKEN, Stack, stack
from tests.servers import serve, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}
SIM = dataclasses.replace(FAST_SIM, moderate_words=("weapon",))
CAR = base64.b64encode((resources.files("receiver") / "assets" / "car.jpg").read_bytes()).decode()


class FlakySink:
    """An HTTP endpoint for the HTTP sink that answers 503 while `down`."""

    def __init__(self) -> None:
        self.down = False
        self.received = 0
        self.app = Starlette(routes=[Route("/events", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        await request.body()
        if self.down:
            return Response(status_code=503)
        self.received += 1
        return Response(status_code=204)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def sink() -> Iterator[tuple[FlakySink, str]]:
    flaky = FlakySink()
    with serve(flaky.app) as url:
        yield flaky, f"{url}/events"


@pytest.fixture
def running(tmp_path: Path, sink: tuple[FlakySink, str]) -> Iterator[Stack]:
    sinks = (f"file://{tmp_path / 'events.jsonl'}", sink[1])
    with stack(tmp_path, SIM, sinks=sinks, delivery_attempts=2) as up:
        yield up


def sign_in(page: Page, url: str, token: str = TOKEN) -> int:
    page.goto(f"{url}/ui/")
    page.fill("#token", token)
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    response = navigation.value
    assert response is not None
    return response.status


def until(page: Page, expression: str, timeout: float = 15.0) -> None:
    """Wait for a JS expression to be true: polled from here, as the page's CSP (rightly) refuses the
    string evaluation `wait_for_function` needs."""
    wait_until(lambda: page.evaluate(expression), timeout, expression)


def row(page: Page, job_id: str) -> str:
    return f'tr[data-job="{job_id}"]'


def test_the_dashboard_end_to_end(browser: Browser, running: Stack, sink: tuple[FlakySink, str]) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    flaky = sink[0]
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{m.text} {m.location}") if m.type == "error" else None)

    # A wrong token is refused; the right one opens the dashboard, with the CSP on every page.
    assert sign_in(page, running.url, "not-the-token") == 401
    assert page.locator(".error").inner_text() == "That token is not valid here."
    assert contrast_failures(page) == []
    page.screenshot(path=SHOTS / "signin-desktop.png")
    errors.clear()  # the refused sign-in's 401
    assert sign_in(page, running.url) == 200
    cookie = next(c for c in context.cookies() if c["name"] == "kr_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    page.wait_for_selector("#live[data-state=open]")

    # An edit submitted through the API appears and reaches `published` without a reload.
    job_id = running.submit(image=CAR)["id"]
    page.wait_for_selector(f'{row(page, job_id)}[data-state="published"]', timeout=15_000)
    assert page.locator(f"{row(page, job_id)} .sink-badges .badge-delivered").count() == 2
    more = [running.submit(image=CAR, prompt="Add a weapon to the car")["id"]]  # moderated
    more += [running.submit(image=CAR, prompt=f"Make the sky purple, take {n}")["id"] for n in (1, 2)]
    for other in more:
        running.wait_state(other, "published", "moderated")
        page.wait_for_selector(f"{row(page, other)}[data-state]")
    received = flaky.received

    # The sink fails: the next event is dead-lettered there, and shows as such.
    flaky.down = True
    dead_id = running.submit(image=CAR, prompt="Turn the car into a boat")["id"]
    page.wait_for_selector(f"{row(page, dead_id)} .badge-dead", timeout=15_000)
    page.check("#dead")
    page.wait_for_selector(f"{row(page, job_id)}", state="detached")
    assert page.locator("#rows tr").count() == 1
    page.uncheck("#dead")
    page.wait_for_selector(f'{row(page, job_id)}[data-state="published"]')
    until(page, "document.querySelector('#dead-count').textContent === '1'")
    [waiting] = page.locator("#sinks .sink").filter(has_text="oldest undelivered").all()
    assert waiting.get_attribute("data-sink") == sink[1] and "reachable" in waiting.inner_text()
    page.screenshot(path=SHOTS / "dashboard-desktop.png")
    assert contrast_failures(page) == []

    # Its page: the images load side by side, with dimensions and sha256.
    page.click(f"{row(page, dead_id)} a")
    page.wait_for_url(f"**/ui/jobs/{dead_id}")
    until(page, "['#input', '#result'].every(id => document.querySelector(id).naturalWidth > 0)")
    before, after = page.locator("#input").bounding_box(), page.locator("#result").bounding_box()
    assert before and after and before["y"] == after["y"] and before["x"] + before["width"] <= after["x"]
    details = page.locator("#details").inner_text()
    shown = running.job(dead_id)
    for image in (shown["inputs"][0], shown["image"]):
        assert image["sha256"] in details and f"{image['width']} \u00d7 {image['height']}" in details
    assert page.locator("#sinks tr[data-sink] .badge-dead").count() == 1
    page.screenshot(path=SHOTS / "job-desktop.png", full_page=True)
    assert contrast_failures(page) == []
    page.click("#mode")  # the overlay: the slider reveals as much of the result as it says
    page.locator("#slider").fill("30")
    assert page.locator("#result").evaluate("img => img.style.clipPath") == "inset(0px 0px 0px 70%)"
    page.click("#mode")
    assert page.locator("#slider").is_hidden()

    # A POST without the CSRF token is refused, even with the session cookie; nothing is redelivered.
    refused = page.request.post(f"{running.url}/v1/jobs/{dead_id}/redeliver")
    assert refused.status == 403 and "CSRF" in refused.json()["detail"]
    assert page.request.post(f"{running.url}/ui/signout", form={"csrf": "forged"}).status == 403
    assert page.locator("#sinks tr[data-sink] .badge-dead").count() == 1

    # The sink recovers; Redeliver delivers the dead letter.
    flaky.down = False
    page.click("#redeliver")
    page.wait_for_selector("#redeliver-status:has-text('Queued again')")
    badges = "[...document.querySelectorAll('#sinks tr[data-sink] .badge')]"
    until(page, f"{badges}.every(badge => badge.textContent === 'delivered')")
    assert flaky.received == received + 1  # the dead letter, delivered at last

    # Phone width: the same pages, readable without sideways scrolling.
    phone = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    phone.add_cookies(
        [{"name": c["name"], "value": c["value"], "url": running.url} for c in context.cookies()]
    )
    small = phone.new_page()
    small.goto(f"{running.url}/ui/")
    small.wait_for_selector(f'{row(small, dead_id)}[data-state="published"]')
    assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    small.screenshot(path=SHOTS / "dashboard-phone.png")
    assert contrast_failures(small) == []
    small.goto(f"{running.url}/ui/jobs/{dead_id}")
    until(small, "['#input', '#result'].every(id => document.querySelector(id).naturalWidth > 0)")
    assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    small.screenshot(path=SHOTS / "job-phone.png", full_page=True)
    phone.close()
    context.close()
    assert errors == []
