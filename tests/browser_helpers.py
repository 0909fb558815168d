"""Debian's Chromium driven by Playwright, shared by the browser tests (never `playwright install`)."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from app_helpers import PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
needs_chromium = pytest.mark.skipif(not shutil.which(CHROMIUM), reason="needs Debian's chromium (make chromium)")
# `make screenshots` sets AMBIENT_SCREENSHOTS=docs; a plain test run leaves the repository untouched.
SCREENSHOTS = Path(os.environ.get("AMBIENT_SCREENSHOTS") or tempfile.mkdtemp(prefix="ambient-screenshots-"))


@contextmanager
def chromium_page(*extra_args: str):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def wait_until(page, expression: str, timeout: float = 30_000) -> None:
    """Playwright's wait_for_function, by polling page.evaluate: wait_for_function evaluates its predicate
    with eval(), which the app's Content-Security-Policy (no 'unsafe-eval') refuses, as it should."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout / 1000:.0f} s: {expression}")
        time.sleep(0.1)


def log_in(page, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
