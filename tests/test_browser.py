"""The app in Debian's Chromium (Playwright): an annotator labels a unit and judges clips, an admin
reads the results. Saves screenshots in $AMBIENT_SCREENSHOTS (`make screenshots`: docs/)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app_helpers import add_user, running_server, seed_run, submit_held, unit_ids, unit_images
from browser_helpers import SCREENSHOTS, chromium_page, log_in, needs_chromium, wait_until
from backend.db.models import Annotation, Annotator, Category, ImageMark, SoundJudgement, Unit
from backend.db.session import upgrade_db, session_factory

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path):
    """Unit A waits for the annotator; unit B is already a dog detector (three annotators agreed)."""
    url = seed_run(tmp_path, n_units=2, n_images=60, image_size=96)
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    unit_a, unit_b = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        for name in ("tom", "una", "val"):
            add_user(url, name)
            annotator = db.scalar(select(Annotator.id).where(Annotator.name == name))
            submit_held(db, annotator, unit_b, "yes", "dog", unit_images(url, unit_b)[:50])
        unit = db.get(Unit, unit_b)       # as `ambient dissect --truth` would label it
        unit.auto_category_id = db.scalar(select(Category.id).where(Category.name == "dog"))
        unit.auto_precision = 0.85
        db.commit()
    with running_server(url) as base:
        yield base, url, unit_a, unit_b


@pytest.fixture()
def page():
    with chromium_page() as page:
        yield page


def test_annotator_labels_a_unit_and_judges_clips_then_admin_sees_results(site, page):
    base, url, unit_a, unit_b = site
    SCREENSHOTS.mkdir(exist_ok=True)
    log_in(page, base, "ann")
    page.click("#next-unit")                                    # units are handed out by a POST, not a GET
    page.wait_for_url(f"{base}/units/{unit_a}")

    page.keyboard.press("y")                                    # yes -> the name box takes the focus
    assert page.evaluate("document.activeElement.id") == "category"
    page.keyboard.type("dog")
    page.keyboard.press("Enter")                                # on to the images
    page.keyboard.press("Space")                                # mark image 1
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Space")                                # mark image 2
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Space")                                # and the one below it
    page.click("#grid li:nth-child(10) label")                  # and one by clicking
    assert page.inner_text("#marked-count") == "4"
    page.screenshot(path=str(SCREENSHOTS / "unit_page.png"))
    page.keyboard.press("Enter")                                # submit -> next unit (none left)
    page.wait_for_selector("text=Nothing left to label")
    with session_factory(upgrade_db(url))() as db:
        annotator = db.scalar(select(Annotator.id).where(Annotator.name == "ann"))
        answer = db.scalar(select(Annotation).where(Annotation.annotator_id == annotator))
        marks = db.scalars(select(ImageMark.unit_image_id).where(ImageMark.annotation_id == answer.id)).all()
    images = unit_images(url, unit_a)
    assert (answer.unit_id, answer.answer) == (unit_a, "yes") and len(marks) == 4
    assert {images[0], images[1], images[9]} <= set(marks)

    page.goto(f"{base}/sound")
    page.click("#next-detector")
    page.wait_for_url(f"{base}/sound/{unit_b}")
    page.focus("#clips .clip")
    page.keyboard.press("p")                                    # play the first clip
    wait_until(page, "document.querySelector('#clips audio').currentTime > 0")
    for _ in range(30):
        page.keyboard.press("y")
    assert page.inner_text("#judged-count") == "30"
    page.screenshot(path=str(SCREENSHOTS / "sound_task.png"))
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Saved 30 sound judgements")
    with session_factory(upgrade_db(url))() as db:
        assert len(db.scalars(select(SoundJudgement.id)).all()) == 30

    page.click("button:has-text('Log out')")
    log_in(page, base, "boss")
    page.wait_for_url(f"{base}/results")
    page.wait_for_selector("#histograms .js-plotly-plot")
    assert "# Detectors" in page.inner_text(".table1")
    page.screenshot(path=str(SCREENSHOTS / "results.png"), full_page=True)
    page.click("a:has-text('run-a')")
    page.wait_for_selector("#histogram .js-plotly-plot")
    assert "Characteristic sound rate" in page.inner_text("#table1")
    assert "automatic: dog (85.0%)" in page.inner_text("#gallery")
    page.screenshot(path=str(SCREENSHOTS / "run_results.png"), full_page=True)
    csv = page.request.get(f"{base}/api/runs/1/detectors.csv").text()
    assert csv.splitlines()[0] == "unit,layer,index_in_layer,category,precision,annotators,agreement,characteristic"
    assert ",dog," in csv
