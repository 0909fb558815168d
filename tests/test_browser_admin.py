"""In Debian's Chromium: an admin launches the tiny demo pipeline from the jobs page, watches it, and finds
the new run's units in the queue; an annotator browses its sound clusters and plays a clip.
Saves jobs.png and clusters.png in $AMBIENT_SCREENSHOTS (`make screenshots`: docs/).

The job's folder already holds the tiny world, its dataset and labels (conftest's tiny_world, shared with
test_browser_jobs.py), so the demo resumes from there as a requeued one does: ingest finds its videos done,
and training, units, dissection, localisation and ablation run here. (Which steps a demo job plans from what
is on disk: test_jobs.py.)"""
from __future__ import annotations

import pytest

from app_helpers import add_user, database_url, running_server
from browser_helpers import SCREENSHOTS, chromium_page, log_in, needs_chromium, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path, tiny_world, monkeypatch):
    """The server with its own worker (AMBIENT_START_WORKER), jobs written in tiny_world's jobs folder: job 1,
    the first in this new database, is the demo whose world and dataset it holds."""
    url = database_url(tmp_path)
    add_user(url, "boss", is_admin=True)
    add_user(url, "ann")
    monkeypatch.setenv("AMBIENT_START_WORKER", "true")
    monkeypatch.setenv("AMBIENT_JOBS_DIR", str(tiny_world / "jobs"))
    with running_server(url) as base:
        yield base


@pytest.fixture()
def page():
    with chromium_page("--autoplay-policy=no-user-gesture-required") as page:
        yield page


def test_admin_runs_the_demo_pipeline_and_an_annotator_plays_a_cluster_clip(site, page):
    base = site
    SCREENSHOTS.mkdir(exist_ok=True)
    log_in(page, base, "boss")
    page.goto(f"{base}/admin/jobs")
    form = page.locator("#new-demo")
    form.locator("select[name=world_preset]").select_option("tiny")
    form.locator("select[name=preset]").select_option("tiny")
    form.locator("input[name=k]").fill("4")
    form.locator("button[type=submit]").click()
    page.wait_for_url(f"{base}/admin/jobs/1")

    wait_until(page, "document.getElementById('status').textContent === 'running'", timeout=30_000)
    wait_until(page, "parseInt(document.getElementById('percent').textContent) > 0", timeout=60_000)
    page.wait_for_selector("#metrics-chart.js-plotly-plot", timeout=90_000)   # drawn from the first epoch
    assert "loss" in page.inner_text("#current")
    page.wait_for_selector("#annotate", timeout=120_000)                       # done: the page reloads
    assert page.inner_text("#status") == "done" and page.inner_text("#percent") == "100%"
    assert "$ ambient dissect" in page.inner_text("#log")
    page.screenshot(path=str(SCREENSHOTS / "jobs.png"), full_page=True)
    page.click("#annotate")                  # the job's run is in no campaign yet: its form, the run chosen
    page.wait_for_url(f"{base}/admin/campaigns/new?run=*")
    page.fill("input[name=name]", "Demo conv5")
    page.click("#save-campaign")
    page.wait_for_url(f"{base}/admin/campaigns")
    page.goto(f"{base}/annotate")
    page.click("#next-unit")                                                  # a POST hands out the unit
    page.wait_for_url(f"{base}/units/*")                                      # the new run's units
    assert page.locator("#grid img").count() > 0

    page.click("button:has-text('Log out')")
    log_in(page, base, "ann")
    page.goto(f"{base}/clusters")
    page.click("#runs a")
    page.wait_for_selector(".cluster .js-plotly-plot")
    image = page.locator(".frames img").first
    image.click()                                                             # hear its clip
    wait_until(page, """() => { const a = document.querySelector('.frames audio');
                                      return a.readyState >= 1 && a.duration > 3; }""", timeout=20_000)
    assert page.locator(".sources").count() > 0                               # the world's true sources
    wait_until(page, "[...document.querySelectorAll('img.cochleagram')].every(i => i.complete)")
    page.screenshot(path=str(SCREENSHOTS / "clusters.png"), full_page=False)
