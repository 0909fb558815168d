"""Blind annotators in Debian's Chromium: an annotator finds no verdict, other answer or automatic label
on the units browser, a unit's page or the unit task, labels a unit and still sees nothing of it while she
can undo; the admin sees everything, opens the results to annotators on the campaign page (she then sees
them) and closes them again."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app_helpers import PASSWORD, add_user, running_server, seed_run, submit_held, unit_ids, unit_images
from browser_helpers import SCREENSHOTS, chromium_page, log_in, needs_chromium
from backend.db.models import Annotator, Category, Unit
from backend.db.session import session_factory, upgrade_db

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]
HUMAN, AUTO = "leakhuman", "leakauto"          # category names found nowhere else
LEAKS = (HUMAN, AUTO, "83.0%", "0.412", "Against the truth", "Not a detector", "Not complete yet", "agreement 100")


@pytest.fixture()
def site(tmp_path):
    """Unit 0: tom, una and val call it a leakhuman detector; unit 1: tom and una say so, ann's turn; both
    labelled leakauto against the truth (precision 0.83, IoU 0.412); unit 2: nothing yet."""
    url = seed_run(tmp_path, n_units=3, n_images=12, image_size=64)
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    u0, u1, u2 = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        for name, units in (("tom", (u0, u1)), ("una", (u0, u1)), ("val", (u0,))):
            add_user(url, name)
            annotator = db.scalar(select(Annotator.id).where(Annotator.name == name))
            for unit_id in units:
                submit_held(db, annotator, unit_id, "yes", HUMAN, unit_images(url, unit_id)[:10])
        auto = Category(name=AUTO)
        db.add(auto)
        db.flush()
        for unit_id in (u0, u1):
            unit = db.get(Unit, unit_id)
            unit.auto_category_id, unit.auto_precision, unit.auto_iou = auto.id, 0.83, 0.412
        db.commit()
    with running_server(url) as base:
        yield base, (u0, u1, u2)


def leaks_on(page) -> list[str]:
    """What of LEAKS the page shows or holds (its text and its HTML, attributes included)."""
    seen = page.inner_text("body") + page.content()
    return [marker for marker in LEAKS if marker in seen]


def test_an_annotator_is_blind_until_she_answers_and_the_admin_opens_the_results(site):
    base, (u0, u1, u2) = site
    SCREENSHOTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        admin = page.context.browser.new_page(viewport={"width": 1280, "height": 900})
        log_in(page, base, "ann")
        page.goto(f"{base}/runs/1/units")
        assert page.locator("#units td.blind").count() == 3 and leaks_on(page) == []
        assert "show here once you have answered it" in page.inner_text("#blind-notice")
        page.goto(f"{base}/runs/1/units?label=leak")                 # filtering gives no label away either
        assert page.locator("#units tr[id^=unit-]").count() == 0
        page.goto(f"{base}/runs/1/units/conv5/0")
        assert page.locator("#verdict, #automatic").count() == 0 and leaks_on(page) == []
        page.screenshot(path=str(SCREENSHOTS / "unit_view_blind.png"), full_page=True)

        page.goto(f"{base}/annotate")
        page.click("#next-unit")
        page.wait_for_url(f"{base}/units/{u1}")                      # the most nearly complete unit first
        assert leaks_on(page) == []
        page.keyboard.press("n")
        page.keyboard.press("Enter")
        page.wait_for_selector("text=Saved conv5 unit 1: no")                  # u1, channel 1 of conv5
        page.goto(f"{base}/runs/1/units/conv5/1")                    # answered, but she can still undo it
        assert page.locator("#blind-notice").count() == 1 and leaks_on(page) == []

        log_in(admin, base, "boss")
        admin.goto(f"{base}/runs/1/units")
        assert f"{AUTO} (83.0%)" in admin.inner_text(f"#unit-{u0}") and admin.locator("#blind-notice").count() == 0
        admin.goto(f"{base}/admin/campaign")
        assert "Blind" in admin.inner_text("#results-state")
        admin.fill("input[name=your_password]", PASSWORD)            # opening the results asks for it
        admin.click("#open-results")
        admin.wait_for_selector("#close-results")
        assert "Open:" in admin.inner_text("#results-state")

        page.goto(f"{base}/runs/1/units/conv5/0")
        assert f"A {HUMAN} detector" in page.inner_text("#verdict")
        assert f"Against the truth: {AUTO}, precision 83.0%, IoU 0.412" in page.inner_text("#automatic")
        page.goto(f"{base}/runs/1/units")
        assert page.locator("#units td.blind").count() == 0 and HUMAN in page.inner_text(f"#unit-{u0}")

        admin.click("#close-results")
        admin.wait_for_selector("#open-results")
        page.goto(f"{base}/runs/1/units/conv5/0")
        assert page.locator("#blind-notice").count() == 1 and leaks_on(page) == []
