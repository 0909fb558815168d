"""Listen to an image in Debian's Chromium: upload a photo, see the label chart and the heatmap, play a
real clip of the top cluster, synthesise the predicted sound (in the background, with progress) and play
it, while the server keeps answering other requests."""
from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from PIL import Image

from app_helpers import running_server
from browser_helpers import SCREENSHOTS, chromium_page, log_in, needs_chromium, wait_until
from listen_helpers import make_listen_run

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path):
    run = make_listen_run(tmp_path)
    # A short synthesis keeps the test fast; its length is a setting like any other.
    with running_server(run.url, env={"AMBIENT_SYNTHESIS_SECONDS": "0.5", "AMBIENT_DATA_ROOTS": str(tmp_path)}) as base:
        yield base, run


def test_upload_chart_heatmap_clip_and_synthesis(site, tmp_path):
    base, run = site
    photo = tmp_path / "street.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (180, 240, 3), dtype=np.uint8)).save(photo)
    with chromium_page("--autoplay-policy=no-user-gesture-required") as page:
        log_in(page, base, "ann")
        page.goto(f"{base}/listen")
        page.click(f"a[href='/runs/{run.run_id}/listen']")
        # Picking a frame of the pool is a POST of the page's CSRF-checked form (a GET predicts nothing).
        with page.expect_navigation():
            page.click("#pool-form button.frame-pick")
        assert page.locator("#heatmap").count() == 1 and page.inner_text("#result h2").startswith("frame ")
        page.set_input_files("input[name=image]", str(photo))
        page.click("#listen-form button[type=submit]")
        page.wait_for_load_state()
        wait_until(page, "document.querySelectorAll('#labels-chart .main-svg').length > 0")      # plotly drew it
        assert page.locator("#labels-chart .bars .point").count() == 4
        assert page.evaluate("document.getElementById('heatmap').naturalWidth") == 99
        assert page.locator("#units a").count() == 5
        page.evaluate("document.querySelector('audio.clip').play()")
        wait_until(page, "document.querySelector('audio.clip').currentTime > 0")
        page.screenshot(path=str(SCREENSHOTS / "listen.png"), full_page=True)

        page.click("#synthesize")
        wait_until(page, "!document.getElementById('synthesis-progress').hidden")
        started = time.monotonic()
        # While it synthesises, the server answers others at once.
        assert httpx.get(f"{base}/login", timeout=5).status_code == 200
        assert time.monotonic() - started < 5
        wait_until(page, "!document.getElementById('synthesis-audio').hidden", timeout=300_000)
        assert page.inner_text("#synthesis-status") == "done"
        page.evaluate("document.getElementById('synthesis-audio').play()")
        wait_until(page, "document.getElementById('synthesis-audio').currentTime > 0")
        duration = page.evaluate("document.getElementById('synthesis-audio').duration")
        assert duration == pytest.approx(0.5, abs=0.05)
