"""Marking many images fast in Debian's Chromium: mark all (A), invert (I), Shift-click and Shift+Space
for every image since the last one; the marks the form submits are the ones shown."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app_helpers import add_user, running_server, seed_run, unit_ids, unit_images, unit_label
from browser_helpers import chromium_page, log_in, needs_chromium
from backend.db.models import Annotation, ImageMark
from backend.db.session import session_factory, upgrade_db

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path):
    url = seed_run(tmp_path, n_units=1, n_images=60, image_size=48)
    add_user(url, "ann")
    with running_server(url) as base:
        yield base, url


def marked(page) -> list[int]:
    """The grid positions (from 1) of the marked images."""
    return page.evaluate("Array.from(document.querySelectorAll('#grid input')).flatMap((b, i) => b.checked ? [i + 1] : [])")


def test_mark_all_invert_and_shift_ranges(site):
    base, url = site
    (unit,) = unit_ids(url)
    with chromium_page() as page:
        log_in(page, base, "ann")
        page.click("#next-unit")
        page.wait_for_url(f"{base}/units/{unit}")
        page.keyboard.press("a")
        assert len(marked(page)) == 60 and page.inner_text("#marked-count") == "60"
        page.keyboard.press("i")
        assert marked(page) == [] and page.inner_text("#marked-count") == "0"
        page.click("#grid li:nth-child(3) label")
        page.click("#grid li:nth-child(10) label", modifiers=["Shift"])
        assert marked(page) == list(range(3, 11)) and page.inner_text("#marked-count") == "8"
        page.click("#grid li:nth-child(6) label", modifiers=["Shift"])     # unmarking a range: 6..10 off
        assert marked(page) == [3, 4, 5]
        page.keyboard.press("ArrowRight")                                 # from image 6 to 7 ...
        page.keyboard.press("ArrowRight")                                 # ... and 8
        page.keyboard.press("Shift+Space")                                # 6 .. 8 marked
        assert marked(page) == [3, 4, 5, 6, 7, 8]
        page.click("#invert-marks")
        inverted = list(range(1, 3)) + list(range(9, 61))
        assert marked(page) == inverted

        page.keyboard.press("y")
        page.keyboard.type("dog")
        page.keyboard.press("Escape")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"text=Saved {unit_label(url, unit)}: yes (dog, {len(inverted)} images marked)")
    images = unit_images(url, unit)
    with session_factory(upgrade_db(url))() as db:
        saved = db.scalars(select(ImageMark.unit_image_id).join(Annotation)).all()
    assert sorted(saved) == sorted(images[i - 1] for i in inverted)


def test_undo_brings_the_unit_back_with_the_answer_and_marks(tmp_path):
    url = seed_run(tmp_path, n_units=2, n_images=12, image_size=32)
    add_user(url, "ann")
    first = unit_ids(url)
    with running_server(url) as base, chromium_page() as page:
        log_in(page, base, "ann")
        page.click("#next-unit")
        page.wait_for_url(f"{base}/units/*")
        unit = int(page.url.rsplit("/", 1)[1])
        page.click("#grid li:nth-child(2) label")
        page.click("#grid li:nth-child(5) label", modifiers=["Shift"])
        page.keyboard.press("y")
        page.keyboard.type("dog")
        page.keyboard.press("Escape")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"text=Saved {unit_label(url, unit)}: yes (dog, 4 images marked)")
        assert page.url != f"{base}/units/{unit}" and int(page.url.rsplit("/", 1)[1]) in first
        page.keyboard.press("u")                                           # undo, from the next unit's page
        page.wait_for_url(f"{base}/units/{unit}")
        assert page.is_visible("#previous-answer")
        assert page.is_checked("input[name=answer][value=yes]") and page.input_value("#category") == "dog"
        assert marked(page) == [2, 3, 4, 5] and page.inner_text("#marked-count") == "4"
        page.reload()                                                      # still filled in after a reload
        assert marked(page) == [2, 3, 4, 5] and page.is_checked("input[name=answer][value=yes]")
        page.click("#grid li:nth-child(5) label")                          # change the marks, answer again
        page.keyboard.press("Enter")
        page.wait_for_selector(f"text=Saved {unit_label(url, unit)}: yes (dog, 3 images marked)")
