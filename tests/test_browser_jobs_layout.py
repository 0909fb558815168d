"""The Jobs page in Debian's Chromium with long run names and one data root inside another: at 1280, 1400
and 1920 px no card overlaps another, every field and button stays inside its card, nothing scrolls
sideways and each folder is listed once; a train job given k is warned about in its form with advice the
form can follow; a probe job is queued from its form, reached from the Representation page."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import update

from app_helpers import add_user, running_server, seed_run
from browser_helpers import chromium_page, log_in, needs_chromium
from backend.db.models import Run
from backend.db.session import session_factory, upgrade_db
from model.data import dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]

LONG_NAME = ("caffenet-bn on 30 sound clusters of the spring field recordings, demo preset, second attempt"
             " · 2026-12-07 14:30")


@pytest.fixture()
def site(tmp_path):
    """Roots: tmp_path and tmp_path/jobs inside it. A 100-frame dataset and a run with a long name under jobs/1."""
    data, run = tmp_path / "jobs" / "1" / "data", tmp_path / "jobs" / "1" / "run"
    data.mkdir(parents=True)
    records = [dataset.FrameRecord(i, f"v{i // 10}", f"v{i // 10}.mp4", i % 10, float(i % 10), f"f{i}.jpg",
                                   f"c{i}.mp3", "test" if i >= 80 else "train", False) for i in range(100)]
    dataset.write_manifest(data, records, np.random.default_rng(0).random((100, 502)), np.zeros((100, 32)))
    url = seed_run(tmp_path, n_units=1, n_images=2, run_name="jobs/1/run")
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps({"data_dir": str(data)}))
    (tmp_path / "benchmarks" / "scenes" / "beach").mkdir(parents=True)
    with session_factory(upgrade_db(url))() as db:
        db.execute(update(Run).values(name=LONG_NAME))
        db.commit()
    add_user(url, "boss", is_admin=True)
    with running_server(url, env={"AMBIENT_DATA_ROOTS": f"{tmp_path}:{tmp_path / 'jobs'}"}) as base:
        yield base, tmp_path, data, run


def options(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} option", "(os) => os.map((o) => o.value)")


# Every pair of cards that overlap, and every field or button that pokes out of its card.
LAYOUT_PROBLEMS = """() => {
  const box = (e) => e.getBoundingClientRect();
  const cards = Array.from(document.querySelectorAll('.job-form'));
  const problems = [];
  cards.forEach((a, i) => cards.slice(i + 1).forEach((b) => {
    const p = box(a), q = box(b);
    if (p.left < q.right && q.left < p.right && p.top < q.bottom && q.top < p.bottom)
      problems.push(a.id + ' overlaps ' + b.id);
  }));
  cards.forEach((card) => card.querySelectorAll('select, input:not([type=hidden]), button').forEach((e) => {
    const c = box(card), r = box(e);
    if (r.left < c.left - 0.5 || r.right > c.right + 0.5 || r.top < c.top - 0.5 || r.bottom > c.bottom + 0.5)
      problems.push(card.id + ': ' + (e.name || e.textContent) + ' sticks out');
  }));
  return problems;
}"""


def test_jobs_page_fits_at_common_widths_and_lists_each_folder_once(site):
    base, root, data, run = site
    with chromium_page() as page:
        log_in(page, base, "boss")
        for width in (1280, 1400, 1920):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(f"{base}/admin/jobs")
            assert page.evaluate(LAYOUT_PROBLEMS) == [], width
            assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), width
            # The Queue button of Extract units is the element found at its centre (no card covers it).
            button = page.locator("#new-units button[type=submit]")
            button.scroll_into_view_if_needed()
            assert page.evaluate("""() => { const b = document.querySelector('#new-units button[type=submit]');
                const r = b.getBoundingClientRect();
                return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === b; }""")
        # One root inside another: each folder once.
        assert options(page, "#new-units select[name=run_dir]") == [str(run)]
        assert options(page, "#new-train select[name=data_dir]") == [str(data)]
        assert LONG_NAME in page.inner_text("#new-units select[name=run_dir]")

        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{base}/results/1")                                   # the run's name box shows it whole
        assert page.evaluate("(() => { const i = document.querySelector('#rename-run input[name=name]');"
                             " return i.scrollWidth <= i.clientWidth; })()")


def test_a_train_job_given_k_is_warned_about_in_its_form(site):
    base, _, data, _ = site
    with chromium_page() as page:
        log_in(page, base, "boss")
        page.goto(f"{base}/admin/jobs")
        train = page.locator("#new-train")
        train.locator("select[name=data_dir]").select_option(str(data))
        train.locator("input[name=k]").fill("4")                          # no labels yet: the job makes them
        train.locator("select[name=preset]").select_option("demo")
        train.locator("button.primary").click()
        page.wait_for_selector("#new-train #job-warning")
        warning = page.inner_text("#new-train #job-warning")
        assert "6 training steps on this data (about 40 training frames / batch 32 x 6 epochs)" in warning
        assert "set Epochs to 200" in warning and "--" not in warning          # advice in the form's own words
        assert page.input_value("#new-train input[name=k]") == "4"        # the values sent stay in the form
        assert "/admin/jobs/" not in page.url
        page.click("#new-train #queue-anyway")
        page.wait_for_url(f"{base}/admin/jobs/1")


def test_a_probe_job_is_queued_from_its_form_reached_from_the_representation_page(site):
    base, root, _, run = site
    with chromium_page() as page:
        log_in(page, base, "boss")
        page.goto(f"{base}/results/1/representation")
        assert "ambient probe" not in page.inner_text("main")            # no command to type into a shell
        page.click("#probe-job-link")
        page.wait_for_url(f"{base}/admin/jobs?probe=**")
        probe = page.locator("#new-probe")
        assert probe.locator("select[name=run_dir]").input_value() == str(run)
        probe.locator("select[name=benchmark]").select_option("world")
        probe.locator("button.primary").click()                           # this run's data is no generated world
        page.wait_for_selector("#error-probe-benchmark")
        assert "benchmark folder" in page.inner_text("#error-probe-benchmark")
        probe = page.locator("#new-probe")
        probe.locator("select[name=benchmark]").select_option("imagefolder")
        probe.locator("input[name=dataset_typed]").fill(str(root / "benchmarks" / "scenes"))
        probe.locator("button.primary").click()
        page.wait_for_url(f"{base}/admin/jobs/1")
        job = page.request.get(f"{base}/api/jobs/1").json()
        assert job["kind"] == "probe"
        assert job["params"] == {"run_dir": str(run), "benchmark": "imagefolder",
                                 "dataset": str(root / "benchmarks" / "scenes"), "device": "auto"}
