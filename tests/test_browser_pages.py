"""Long pages in Debian's Chromium: the units browser pages its units, 50 at a time, keeping the filters,
and a run's results page folds its long lists until they are opened; every unit is a link. A blank
filter lists every unit."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app_helpers import add_user, running_server, seed_run, unit_ids
from browser_helpers import chromium_page, log_in, needs_chromium
from backend.db.models import Category, Unit
from backend.db.session import session_factory, upgrade_db

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """60 units, every one labelled dog automatically: one server for the module, whose tests only read."""
    url = seed_run(tmp_path_factory.mktemp("site"), n_units=60, n_images=5, image_size=32)
    add_user(url, "boss", is_admin=True)
    with session_factory(upgrade_db(url))() as db:
        dog = db.scalar(select(Category.id).where(Category.name == "dog"))
        for unit_id in unit_ids(url):
            unit = db.get(Unit, unit_id)
            unit.auto_category_id, unit.auto_precision, unit.auto_iou = dog, 0.9, 0.5
        db.commit()
    with running_server(url) as base:
        yield base


def test_units_browser_pages_and_the_run_page_folds(site):
    base = site
    with chromium_page() as page:
        log_in(page, base, "boss")
        page.goto(f"{base}/runs/1/units")
        page.select_option("select[name=layer]", "conv5")
        page.click("#unit-filters button[type=submit]")
        page.wait_for_url(f"{base}/runs/1/units?*")
        assert page.locator("#units tr[id^=unit-]").count() == 50
        assert page.evaluate("document.body.scrollHeight") < 12_000       # 60 units would not stay short for ever
        page.click("a.next-page")
        page.wait_for_url("**offset=50**")
        assert page.locator("#units tr[id^=unit-]").count() == 10 and "layer=conv5" in page.url
        assert page.locator("a.next-page").count() == 0
        page.click("#units tr[id^=unit-] a")                              # every unit is a link to its page
        page.wait_for_url(f"{base}/runs/1/units/conv5/50")

        page.goto(f"{base}/results/1")
        assert not page.locator("#auto-units").is_visible() and not page.locator("#auto-label-table").is_visible()
        page.click("#auto-units-list summary")
        assert page.locator("#auto-units").is_visible() and page.locator("#auto-units tr[id^=auto-unit-]").count() == 60
        page.click("#auto-label-list summary")
        page.click("#auto-label-table tr[id^=auto-label-] a >> nth=0")
        page.wait_for_url(f"{base}/runs/1/units/conv5/*")


def test_a_blank_filter_lists_every_unit(site):
    """Issue 27 item 6: "Show" with blank number boxes and "Characteristic sound: any" was a bare 422."""
    base = site
    with chromium_page() as page:
        log_in(page, base, "boss")
        page.goto(f"{base}/runs/1/units?min_precision=0.95")                 # a filter that leaves none ...
        assert page.inner_text("#shown-count") == "0"
        page.fill("input[name=min_precision]", "")                          # ... cleared: blank boxes, "any"
        page.fill("input[name=min_iou]", "")
        page.select_option("select[name=characteristic]", "")
        page.click("#unit-filters button[type=submit]")
        page.wait_for_url(f"{base}/runs/1/units?*")
        assert "min_precision=&" in page.url                                 # the blank box was sent
        assert page.inner_text("#shown-count") == "60" and page.locator("#units tr[id^=unit-]").count() == 50
