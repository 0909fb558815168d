"""Campaigns in Debian's Chromium (Playwright): two runs, a campaign on one; the annotator's queue holds only
its units and the task page names it with the units left; skip hands a unit on; an admin puts the other
run in a second campaign, listed separately; results and exports per campaign (issue 35)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app_helpers import add_user, running_server, seed_run, unit_ids
from browser_helpers import SCREENSHOTS, chromium_page, log_in, needs_chromium
from backend.db.models import Run, UnitSkip
from backend.db.session import session_factory, upgrade_db

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path):
    """run-a (3 units) in its open campaign; run-b (2 units), newly published, in none."""
    url = seed_run(tmp_path, n_units=3, n_images=6, run_name="run-a")
    seed_run(tmp_path, n_units=2, n_images=6, run_name="run-b", campaign=False)
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    with session_factory(upgrade_db(url))() as db:
        runs = {run.name: run.id for run in db.scalars(select(Run))}
    ids = unit_ids(url)
    with running_server(url) as base:
        yield base, url, runs, ids[:3], ids[3:]


def test_a_campaign_holds_the_queue_and_a_second_one_is_listed_apart(site):
    base, url, runs, a_units, b_units = site
    SCREENSHOTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        log_in(page, base, "ann")
        page.goto(f"{base}/annotate")
        assert page.locator("#campaigns li").count() == 1          # run-b is in no campaign: in no queue
        assert "3 of 3 units left for you" in page.inner_text("#campaigns")
        page.click("#next-unit")
        page.wait_for_url(f"{base}/units/*")
        first = int(page.url.rsplit("/", 1)[1])
        assert first in a_units
        assert page.inner_text("#campaign-progress") == "3 of 3 units left in 'run-a conv5'"
        page.screenshot(path=str(SCREENSHOTS / "campaign_task.png"))

        page.click("#skip")                                         # can't tell: the next unit comes
        page.wait_for_url(lambda address: address.rsplit("/", 1)[1] not in ("", str(first)) and "/units/" in address)
        assert int(page.url.rsplit("/", 1)[1]) in a_units
        assert page.inner_text("#campaign-progress") == "2 of 3 units left in 'run-a conv5'"
        assert "and skipped 1." in page.inner_text(".help")
        with session_factory(upgrade_db(url))() as db:
            assert db.scalar(select(UnitSkip.unit_id)) == first

        page.click("form.logout button")                            # logging out gives her held unit back
        page.wait_for_url(f"{base}/login")
        log_in(page, base, "boss")
        page.goto(f"{base}/admin/campaigns/new?run={runs['run-b']}")
        page.fill("input[name=name]", "Sound conv5, spring")
        page.click("#save-campaign")
        page.wait_for_url(f"{base}/admin/campaigns")
        assert "Sound conv5, spring" in page.inner_text("#campaigns")

        page.goto(f"{base}/results/{runs['run-a']}")
        assert "Answers of the campaign run-a conv5" in page.inner_text("#campaign")
        table1 = page.get_attribute("a[href*='table1.json']", "href")
        assert table1.endswith("?campaign=1")
        assert page.request.get(f"{base}{table1}").json()["campaign"] == "run-a conv5"
        page.goto(f"{base}/results/{runs['run-b']}")
        assert "Answers of the campaign Sound conv5, spring" in page.inner_text("#campaign")

        page.context.clear_cookies()
        log_in(page, base, "ann")
        page.goto(f"{base}/annotate")                                # nothing held: the open campaigns, apart
        names = page.locator("#campaigns .campaign-name").all_inner_texts()
        assert names == ["run-a conv5", "Sound conv5, spring"]
        assert "2 of 3 units left for you" in page.inner_text("#campaign-1")      # the skipped one is not hers
        assert "2 of 2 units left for you" in page.inner_text("#campaign-2")
        page.screenshot(path=str(SCREENSHOTS / "campaigns_start.png"))
