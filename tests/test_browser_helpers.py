"""tests/browser_helpers.py: the browser tests share one Chromium (launching it costs about 2 s on 2 cores),
each page in a fresh context, and it is closed before any other test (tests/conftest.py)."""
from __future__ import annotations

import asyncio

import pytest

from browser_helpers import chromium_page, close_chromium, needs_chromium

pytestmark = [pytest.mark.browser, needs_chromium]


def test_pages_share_one_chromium_but_never_cookies():
    with chromium_page() as first:
        first.context.add_cookies([{"name": "ambient_session", "value": "left-behind", "url": "http://127.0.0.1/"}])
        browser = first.context.browser
    with chromium_page() as second:
        assert second.context.browser is browser and browser.is_connected()
        assert second.context.cookies() == []


def test_asyncio_runs_again_once_the_shared_chromium_is_closed():
    """Why conftest.py closes it before other tests: Playwright's event loop counts as running in this thread."""
    async def answer() -> int:
        return 42

    with chromium_page():
        pass
    refused = answer()
    with pytest.raises(RuntimeError, match="running event loop"):
        asyncio.run(refused)
    refused.close()
    close_chromium()
    assert asyncio.run(answer()) == 42
