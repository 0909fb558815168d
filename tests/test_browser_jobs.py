"""In Debian's Chromium, on a server started with its own worker (`ambient serve --worker`, as `make demo`
serves): the admin queues training from the jobs page, watches its progress and loss chart; the job goes
on to the new run's units and their automatic labels (a world's data), the run is named by what it is
(its results page shows its held-out accuracy; the admin renames it), and an annotator is handed one of
its units. (The probe step that follows on a world with enough
held-out videos is planned in test_jobs.py; this tiny world has too few.)"""
from __future__ import annotations

import time

import pytest
from app_helpers import add_user, database_url, running_server
from browser_helpers import chromium_page, log_in, needs_chromium, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


def _finished(page, url: str, timeout: float = 300) -> dict:
    """The job's state once it has ended (its log says why, should it fail)."""
    deadline = time.monotonic() + timeout
    while True:
        job = page.request.get(url).json()
        if job["status"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


@pytest.fixture()
def site(tmp_path, tiny_world, monkeypatch):
    """The tiny world's dataset with cluster labels (conftest's tiny_world: training only reads it), and the
    server with its worker; jobs may read tmp_path and tiny_world."""
    data = tiny_world / "jobs" / "1" / "data"
    url = database_url(tmp_path)
    add_user(url, "boss", is_admin=True)
    add_user(url, "ann")
    monkeypatch.setenv("AMBIENT_START_WORKER", "true")
    monkeypatch.setenv("AMBIENT_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("AMBIENT_DATA_ROOTS", f"{tmp_path}:{tiny_world}")
    with running_server(url) as base:
        yield base, data


def test_admin_trains_from_the_jobs_page_extracts_units_and_an_annotator_gets_one(site):
    base, data = site
    with chromium_page() as page:
        log_in(page, base, "boss")
        deadline = time.monotonic() + 60
        while True:                                      # the server's own worker registers once it has started
            page.goto(f"{base}/admin/jobs")
            if "No worker is running" not in page.inner_text("#workers") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "idle" in page.inner_text("#workers")
        form = page.locator("#new-train")
        form.locator("select[name=data_dir]").select_option(str(data))         # picked from the data roots
        form.locator("select[name=preset]").select_option("tiny")
        form.locator("select[name=device]").select_option("cpu")
        form.locator("button[type=submit]").click()
        # 4 videos give a handful of steps: the page says so before anything is queued.
        page.wait_for_selector("#job-warning")
        assert "training steps on this data" in page.inner_text("#job-warning")
        assert "set Epochs to" in page.inner_text("#job-warning")           # advice the form can follow
        page.click("#new-train #queue-anyway")
        page.wait_for_url(f"{base}/admin/jobs/1")
        assert page.inner_text("#device") == "cpu"

        wait_until(page, "document.getElementById('status').textContent === 'running'", timeout=60_000)
        seen = set()
        wait_until(page, "parseInt(document.getElementById('percent').textContent) > 0", timeout=90_000)
        seen.add(page.inner_text("#percent"))
        page.wait_for_selector("#metrics-chart.js-plotly-plot", timeout=90_000)   # drawn from the first epoch
        assert "loss" in page.inner_text("#current")
        job = _finished(page, f"{base}/api/jobs/1", timeout=600)
        assert job["status"] == "done", job["log"]
        page.wait_for_selector("#annotate", timeout=30_000)                       # done: the page reloads
        seen.add(page.inner_text("#percent"))
        assert page.inner_text("#status") == "done" and "100%" in seen
        log = page.inner_text("#log")                                             # one job: train, units, dissect
        assert "$ ambient units" in log and "published run" in log and "$ ambient dissect" in log
        assert page.locator("#extract-units").count() == 0
        run = page.request.get(f"{base}/api/v1/runs").json()["items"][0]
        assert run["name"].startswith("jobs/1/run · caffenet-bn on 4 sound clusters, tiny preset · ")
        units = page.request.get(f"{base}/api/v1/runs/{run['id']}/units").json()["items"]
        assert units and any(unit["auto_category"] for unit in units)              # labelled from the truth
        # The tiny world holds too few held-out videos to score a probe: no probe step; its page is linked.
        assert "$ ambient probe" not in log and page.locator("#representation").count() == 1
        page.click(f"a[href='/results/{run['id']}']")                              # the run's results page
        page.wait_for_url(f"{base}/results/{run['id']}")
        assert "Held-out accuracy" in page.inner_text("#held-out") and "chance" in page.inner_text("#held-out")
        page.fill("#rename-run input[name=name]", "tiny world, 4 clusters")      # admins rename runs
        page.click("#rename-run button[type=submit]")
        page.wait_for_load_state()
        assert page.request.get(f"{base}/api/v1/runs").json()["items"][0]["name"] == "tiny world, 4 clusters"

        page.click("button:has-text('Log out')")
        log_in(page, base, "ann")
        page.goto(f"{base}/annotate")
        assert page.locator("#no-campaigns").count() == 1            # the train job's run enters no queue ...
        page.click("button:has-text('Log out')")
        log_in(page, base, "boss")
        page.goto(f"{base}/admin/jobs/1")
        page.click("#annotate")                                      # ... until an admin puts it in a campaign
        page.wait_for_url(f"{base}/admin/campaigns/new?run={run['id']}")
        page.fill("input[name=name]", "tiny world conv5")
        page.click("#save-campaign")
        page.wait_for_url(f"{base}/admin/campaigns")
        page.click("button:has-text('Log out')")
        log_in(page, base, "ann")
        page.goto(f"{base}/annotate")
        page.click("#next-unit")                                                  # a POST hands out a unit
        page.wait_for_url(f"{base}/units/*")
        assert page.locator("#grid img").count() > 0
