"""The unit page's feature visualisation and similar units, and the compare page, in Debian's Chromium (issue 38):
an admin sees the optimised image beside the top image, the similar units with their r and automatic labels,
follows one, and reads the same in the API; an annotator who has not answered those units sees no labels."""
from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import select, update

from app_helpers import add_user, running_server, seed_run
from browser_helpers import SCREENSHOTS, chromium_page, log_in, needs_chromium, wait_until
from backend.db.models import Category, Run, Unit
from backend.db.session import session_factory, upgrade_db

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 96), colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture()
def site(tmp_path):
    """Three units: unit 0 visualised, unit 2 (a dog detector by its automatic label) most like it, then unit 1;
    the run compared with another, as `ambient visualize`, `ambient units` and `ambient compare` publish them."""
    url = seed_run(tmp_path, n_units=3, n_images=4, image_size=96)
    with session_factory(upgrade_db(url))() as db:
        dog = db.scalar(select(Category.id).where(Category.name == "dog"))
        db.execute(update(Unit).where(Unit.index == 0).values(
            visualization_png=png((200, 40, 40)),
            similar=[{"layer": "conv5", "unit": 2, "r": 0.91}, {"layer": "conv5", "unit": 1, "r": 0.23}]))
        db.execute(update(Unit).where(Unit.index == 2).values(auto_category_id=dog, auto_precision=0.8, auto_iou=0.2))
        label = {"category": "dog", "precision": 0.8, "detector": True}
        units = [{"unit": u, "match": m, "r": r, "best": m, "best_r": r, "label_a": label if u == 2 else None,
                  "label_b": label if u == 2 else None, "same_detector": u == 2, "silent": False}
                 for u, m, r in ((0, 1, 0.62), (1, 0, 0.4), (2, 2, 0.88))]
        db.execute(update(Run).values(comparisons={"compare_run-a_run-b.json": {
            "run_a": "/runs/a", "run_b": "/runs/b", "layer": "conv5", "pool": "/data", "pool_images": 4,
            "matching": "optimal (linear_sum_assignment)", "match_r": 0.5, "median_r": 0.62, "identity": False,
            "units": units, "summary": {"detectors_a": 1, "recurring": 1,
                                        "categories": {"dog": {"detectors": 1, "recurring": 1}}}}}))
        db.commit()
    add_user(url, "ada", is_admin=True)
    add_user(url, "ann")
    with running_server(url) as base:
        yield base


def test_unit_page_shows_the_visualisation_and_similar_units(site):
    base = site
    with chromium_page() as page:
        errors, failed = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
        log_in(page, base, "ada")
        page.goto(f"{base}/runs/1/units/conv5/0")
        wait_until(page, "Array.from(document.querySelectorAll('#visualization img'))"
                         ".every((img) => img.complete && img.naturalWidth > 0)")
        assert page.locator("#visualization img").count() == 2          # the optimised image beside the top one
        assert page.evaluate("document.querySelector('#visualization img').naturalWidth") == 96
        items = page.locator("#similar-units li").all_inner_texts()
        assert items == ["conv5 unit 2 r = 0.91 · dog", "conv5 unit 1 r = 0.23"]
        detail = page.request.get(f"{base}/api/v1/runs/1/units/conv5/0").json()
        assert detail["similar"] == [{"layer": "conv5", "unit": 2, "r": 0.91, "label": "dog"},
                                     {"layer": "conv5", "unit": 1, "r": 0.23, "label": None}]
        assert detail["visualization_url"].endswith("/visualization.png")
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "unit_explore.png"), full_page=True)
        page.click("#similar-units li:first-child a")
        page.wait_for_url(f"{base}/runs/1/units/conv5/2")
        assert page.locator("#no-visualization").count() == 1 and page.locator("#no-similar-units").count() == 1

        page.goto(f"{base}/runs/1/compare")
        assert "1 of A's 1 detectors" in page.inner_text("#comparison-summary-1")
        assert page.locator("table.compare-units tbody tr").count() == 3
        assert "dog" in page.inner_text("#compare-2") and page.locator("#compare-2.recurring").count() == 1
        assert failed == [] and errors == []

        page.context.clear_cookies()                  # an annotator who has answered none of them: no labels
        log_in(page, base, "ann")
        page.goto(f"{base}/runs/1/units/conv5/0")
        assert page.locator("#similar-units li").all_inner_texts() == ["conv5 unit 2 r = 0.91", "conv5 unit 1 r = 0.23"]
        page.goto(f"{base}/runs/1/compare")
        assert "dog" not in page.inner_text("table.compare-units")
