"""The unit page in Debian's Chromium: an annotator opens a detector's page from the units browser, sees
its images and verdict (she answered it; the next unit, which she has not, is blind), plays a clip with its play button, and walks to the next unit; the page's
script runs under the Content-Security-Policy with no console error."""
from __future__ import annotations

import pytest
from datetime import timedelta

from sqlalchemy import select, update

from app_helpers import add_user, jpeg, running_server, seed_run, submit_held, unit_ids, unit_images
from browser_helpers import SCREENSHOTS, chromium_page, log_in, needs_chromium, wait_until
from backend.db import store
from backend.app.reservations import utcnow
from backend.db.models import Annotation, Annotator, Dataset, Layer
from backend.db.session import session_factory, upgrade_db

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path):
    """Unit 0 is a dog detector (three annotators, ann among them, marked 50 of its 60 images 20 minutes ago,
    so ann sees its results), with its activation histogram and two images each near the 90th and 50th
    percentiles, as `ambient units` saves them; unit 1 is not labelled yet."""
    url = seed_run(tmp_path, n_units=2, n_images=60, image_size=96)
    first, _ = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        for name in ("ann", "una", "val"):
            add_user(url, name)
            annotator = db.scalar(select(Annotator.id).where(Annotator.name == name))
            submit_held(db, annotator, first, "yes", "dog", unit_images(url, first)[:50])
        db.execute(update(Annotation).values(created_at=utcnow() - timedelta(minutes=20)))   # past undo
        samples = [store.UnitSampleRecord(q, row, 3.0 - row, jpeg((90, 90, 200), 96, seed=row))
                   for q, rows in ((0.9, (1, 2)), (0.5, (3, 4))) for row in rows]
        store.replace_unit_views(db, db.scalar(select(Layer)), db.scalar(select(Dataset)), [
            store.UnitViewRecord(0, {"counts": [30, 12, 9, 6, 3], "edges": [0, 1, 2, 3, 4, 5]}, samples)])
        db.commit()
    with running_server(url) as base:
        yield base, first


def test_unit_page_plays_clips_and_links_its_neighbours(site):
    base, first = site
    with chromium_page("--autoplay-policy=no-user-gesture-required") as page:
        errors, failed = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
        log_in(page, base, "ann")
        page.goto(f"{base}/runs/1/units")
        page.select_option("select[name=characteristic]", "")         # "any", and every number box blank
        page.click("#unit-filters button[type=submit]")
        page.wait_for_url(f"{base}/runs/1/units?*")
        assert page.locator("#units tr[id^=unit-]").count() == 2      # a blank filter lists everything
        page.goto(f"{base}/runs/1/units?label=dog")
        assert page.locator("#units tr[id^=unit-]").count() == 1
        page.click(f"#unit-{first} a")
        page.wait_for_url(f"{base}/runs/1/units/conv5/0")
        assert "A dog detector" in page.inner_text("#verdict")
        wait_until(page, "Array.from(document.querySelectorAll('#top-images img'))"
                         ".every((img) => img.complete && img.naturalWidth > 0)")
        assert page.locator("#top-images img").count() == 60
        assert page.locator("#top-images li.contains").count() == 50     # the images the annotators marked
        wait_until(page, "document.querySelector('#histogram .plotly-figure .main-svg') !== null")   # drawn by charts.js
        wait_until(page, "Array.from(document.querySelectorAll('.samples img'))"
                         ".every((img) => img.complete && img.naturalWidth > 0)")
        assert page.locator("#samples-90 img").count() == 2 and page.locator("#samples-50 img").count() == 2
        page.click("#samples-50 li:nth-child(1) button.play")             # a sample's clip plays too
        wait_until(page, "!document.querySelector('#samples-50 li:nth-child(1) audio').paused")

        page.click("#top-images li:nth-child(3) button.play")
        wait_until(page, "!document.querySelector('#top-images li:nth-child(3) audio').paused")
        # audio.paused flips when play() is called, the button's label on the "play" event a task later.
        wait_until(page, "document.querySelector('#top-images li:nth-child(3) button.play').textContent === '❚❚'")
        page.click("#top-images li:nth-child(5) button.play")            # one clip at a time
        wait_until(page, "document.querySelector('#top-images li:nth-child(3) audio').paused")
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "unit_view.png"))

        page.click("#next-unit")
        page.wait_for_url(f"{base}/runs/1/units/conv5/1")
        assert "show here once you have answered it" in page.inner_text("#blind-notice")   # ann has not
        assert page.locator("#next-unit").count() == 0
        page.click("#previous-unit")
        page.wait_for_url(f"{base}/runs/1/units/conv5/0")
        assert failed == []
        # Any error, a CSP violation or a missing file (the favicon included) would be listed here.
        assert errors == []
        icon = page.request.get(f"{base}/favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"] == "image/x-icon" and icon.body()[:4] == b"\0\0\1\0"
