"""Crowd quality control in Debian's Chromium (Playwright, issue 36): an annotator labels a campaign with gold
units and cannot tell them from the others (same page, same URL pattern, the same elements, the units-left count
falling by one each time, no trace in the page or what it fetches); an admin reads the annotators page, linked from
the campaign page, and excludes the annotator, then includes her again."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app_helpers import add_campaign, add_user, running_server, seed_run, unit_ids
from browser_helpers import SCREENSHOTS, chromium_page, log_in, needs_chromium
from backend.app.gold import set_gold
from backend.db.models import Campaign, Run, Unit
from backend.db.session import session_factory, upgrade_db

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path):
    """Six units in an open campaign at a gold rate of 0.5, two of them gold ("no")."""
    url = seed_run(tmp_path, n_units=6, n_images=6, campaign=False)
    units = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        campaign_id = add_campaign(db, db.scalar(select(Run.id)), name="Spring", gold_rate=0.5)
        campaign = db.get(Campaign, campaign_id)
        for unit_id in units[:2]:
            set_gold(db, campaign, db.get(Unit, unit_id), "no", None, "typed")
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    with running_server(url) as base:
        yield base, campaign_id, set(units[:2])


def signature(page) -> tuple:
    """What a unit page is made of, whatever the unit: its elements' ids and classes."""
    return tuple(page.evaluate("[...document.querySelectorAll('*')].map(e => e.tagName + '#' + e.id + '.' + "
                               "e.className).filter(s => !s.startsWith('OPTION'))"))


def test_an_annotator_cannot_tell_gold_units_and_an_admin_reads_and_excludes_her(site):
    base, campaign_id, gold = site
    SCREENSHOTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        fetched: list[str] = []
        page.on("request", lambda request: fetched.append(request.url))
        log_in(page, base, "ann")
        page.goto(f"{base}/annotate")
        page.click("#next-unit")
        seen, signatures, left = [], {}, []
        while match := re.fullmatch(rf"{re.escape(base)}/units/(\d+)", page.url):   # a unit page, till none is left
            unit = int(match.group(1))
            seen.append(unit)
            html = page.content()
            assert "gold" not in html.lower()
            signatures[unit] = signature(page)
            left.append(int(page.inner_text("#campaign-progress b")))
            page.check("input[name=answer][value=no]")
            page.click("button.primary[type=submit]")
            page.wait_for_load_state()
        assert gold <= set(seen) and len(seen) == 6                 # both gold units, among the others
        # Gold or not, the same page (from the second on: the first offers no Undo yet; it may be gold or not).
        assert gold & set(seen[1:]) and len({signatures[unit] for unit in seen[1:]}) == 1
        assert left == [6, 5, 4, 3, 2, 1]                           # one fewer after every answer
        assert fetched and not any("gold" in address.lower() for address in fetched)

        page.context.clear_cookies()
        log_in(page, base, "boss")
        page.goto(f"{base}/admin/campaigns/{campaign_id}")
        page.click("#annotators-link")
        page.wait_for_url(f"{base}/admin/campaigns/{campaign_id}/annotators")
        row = page.locator("#annotator-ann")
        assert row.locator("td").nth(1).inner_text() == "6"          # answers
        assert row.locator("td").nth(2).inner_text() == "2"          # gold answered
        assert row.locator(".gold-accuracy").inner_text() == "100.0%"
        assert "2 gold units" in page.inner_text("#quality-summary")
        page.screenshot(path=str(SCREENSHOTS / "annotators.png"))
        page.click("#annotator-ann button.exclusion")               # she alone judged her units: refused
        page.wait_for_load_state()
        assert "last annotator" in page.inner_text("body")
        assert "(excluded)" not in page.inner_text("#annotator-ann")
        api = page.request.get(f"{base}/api/v1/campaigns/{campaign_id}/annotators").json()
        assert [(item["name"], item["gold_accuracy"], item["excluded"]) for item in api["items"]] == [("ann", 1.0, False)]
