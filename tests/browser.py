"""Headless Chromium for the dashboard tests: Debian's `chromium` package, driven by Playwright.

Playwright's own browser download cannot run here, so the tests use /usr/bin/chromium. With `CI=true`
a missing Chromium is installed with apt-get (and a failure fails the test); elsewhere it skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_path() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI") != "true":
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium), and CI is not true")
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail(f"CI=true: {CHROMIUM} is missing and there is no apt-get to install it", pytrace=False)
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "chromium"]):
        subprocess.run(command, check=True, capture_output=True, timeout=600)
    return CHROMIUM


@contextmanager
def chromium() -> Iterator[Browser]:
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
