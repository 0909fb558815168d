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


# Playwright and the Chromiums it launched, one per set of extra arguments: shared by the browser tests
# that run one after another (starting both takes about 2 s on 2 cores); close_chromium ends them.
_playwright = None
_browsers: dict[tuple[str, ...], object] = {}


@contextmanager
def chromium_page(*extra_args: str):
    """A page in a fresh browser context (its own cookies, storage and cache) of the shared Chromium
    launched with `extra_args`."""
    context = _chromium(extra_args).new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def _chromium(extra_args: tuple[str, ...]):
    global _playwright
    if _playwright is None:
        from playwright.sync_api import sync_playwright
        _playwright = sync_playwright().start()
    browser = _browsers.get(extra_args)
    if browser is None or not browser.is_connected():
        browser = _browsers[extra_args] = _playwright.chromium.launch(executable_path=CHROMIUM,
                                                                      args=[*CHROMIUM_ARGS, *extra_args])
    return browser


def close_chromium() -> None:
    """Close the shared Chromiums and stop Playwright (tests/conftest.py, before any test that is not a
    browser test): while Playwright runs, its event loop counts as running in this thread, so asyncio.run()
    and anyio.run() would fail."""
    global _playwright
    for browser in _browsers.values():
        if browser.is_connected():
            browser.close()
    _browsers.clear()
    if _playwright is not None:
        _playwright.stop()
        _playwright = None


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
