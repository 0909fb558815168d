"""Issue 28 in Debian's Chromium: the run's results page draws when the detectors emerged and tables
what switching them off costs; the unit page lists the sounds the unit helps predict, with clips to play;
the cluster browser names the units each cluster depends on."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from app_helpers import add_user, running_server, seed_run
from backend.db import store
from backend.db.models import Dataset, Layer, Run
from backend.db.session import session_factory, upgrade_db
from browser_helpers import SCREENSHOTS, chromium_page, log_in, needs_chromium, wait_until
from model.units.ablate import single_unit_links
from model.sound.groups import SoundGroup

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]

EMERGENCE = {"layer": "conv5", "source": "truth", "pool_size": 6, "split": "all", "skipped": [], "detectors": [],
             "steps": [{"step": s, "accuracy": a, "detectors": {"total": t, "sounding": t - 1, "silent": 1,
                                                                 "per_category": {"dog": t - 1, "tree": 1}}}
                       for s, a, t in ((50, 0.08, 1), (100, 0.12, 5), (150, 0.15, 9))]}
# Unit 0 alone off costs cluster 2 (index 1) 30 points; the dog detectors' ablation costs frames hearing dogs.
ABLATION = {"layer": "conv5", "baseline": {"accuracy": 0.2, "per_label": [0.1, 0.5], "per_label_probability": [0.3, 0.4]},
            "ablations": [{"units": [0, 2], "category": "dog", "accuracy": 0.12, "per_label": [0.1, 0.2],
                           "random": {"accuracy": 0.19, "accuracy_std": 0.01, "repeats": 20},
                           "truth": {"own_drop": 0.05, "own_drop_random": 0.004, "other_drop": 0.001}}],
            "single_units": [{"unit": 0, "accuracy": 0.15, "per_label": [0.1, 0.2],
                              "per_label_probability": [0.3, 0.25]},
                             {"unit": 1, "accuracy": 0.2, "per_label": [0.1, 0.5], "per_label_probability": [0.3, 0.4]}]}


@pytest.fixture()
def site(tmp_path):
    url = seed_run(tmp_path, n_units=2, n_images=6, image_size=96)
    add_user(url, "boss", is_admin=True)
    with session_factory(upgrade_db(url))() as db, db.begin():
        run = db.scalar(select(Run))
        groups = [SoundGroup(index=i, name=f"Cluster {i + 1}", members=np.array([i, i + 2]), share=0.3,
                             texture=np.zeros(502), contrast=None, closest_rows=[i, i + 2], sources={"dog": 2})
                  for i in range(2)]
        store.replace_sound_clusters(db, run, db.scalar(select(Dataset)), groups)
        store.write_run_analyses(db, run, EMERGENCE, ABLATION)
        store.write_ablation_links(db, run, db.scalar(select(Layer)), *single_unit_links(ABLATION))
    with running_server(url) as base:
        yield base, url


def test_results_unit_and_cluster_pages_show_emergence_and_ablation(site):
    base, _ = site
    with chromium_page() as page:
        failed = []       # seed_run writes no frame pictures: the cluster page's /frames/N/image are missing
        page.on("response", lambda response: failed.append(response.url)
                if response.status >= 400 and not response.url.endswith("/image") else None)
        log_in(page, base, "boss")
        page.goto(f"{base}/results/1")
        page.wait_for_selector("#emergence .js-plotly-plot")                  # drawn by charts.js
        assert page.locator("#emergence .scatterlayer .trace").count() == 4   # 3 detector lines, accuracy
        table = page.inner_text("#ablation")
        assert "dog" in table and "12.0%" in table and "+0.0500 / +0.0040 / +0.0010" in table
        SCREENSHOTS.mkdir(exist_ok=True)
        page.locator("#emergence").screenshot(path=str(SCREENSHOTS / "emergence.png"))
        assert page.request.get(f"{base}/api/v1/runs/1/emergence").json()["steps"][-1]["detectors"]["total"] == 9

        page.goto(f"{base}/runs/1/units/conv5/0")
        helps = page.inner_text("#helps-predict")
        assert "Cluster 2: probability -0.1500, accuracy -30.0 points" in helps and "Cluster 1" not in helps
        assert page.locator("#helps-predict audio").count() == 2             # the cluster's closest test frames
        page.locator("#helps-predict audio").first.evaluate("audio => audio.play()")
        wait_until(page, "!document.querySelector('#helps-predict audio').paused")
        page.click("#helps-predict a")                                     # to the cluster, on its page
        page.wait_for_url(f"{base}/runs/1/clusters?offset=0#group-1")
        page.goto(f"{base}/runs/1/units/conv5/1")
        assert page.locator("#no-helps-predict").count() == 1

        page.goto(f"{base}/runs/1/clusters")
        assert "conv5 unit 0" in page.inner_text("#depends-on-1") and page.locator("#depends-on-0").count() == 0
        assert not failed, failed
