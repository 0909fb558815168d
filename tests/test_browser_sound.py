"""The sound task in Debian's Chromium: after a judgement the next clip plays on its own (the previous one
stops), played clips are marked, and the progress through the 30 clips shows; undo brings the unit back
with the judgements given."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from app_helpers import add_user, running_server, seed_run, submit_held, unit_ids, unit_images, unit_label
from browser_helpers import chromium_page, log_in, needs_chromium, wait_until
from backend.db.models import Annotator
from backend.db.session import session_factory, upgrade_db

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture()
def site(tmp_path):
    """One dog detector with 30 top images and their clips."""
    url = seed_run(tmp_path, n_units=1, n_images=30, image_size=48)
    (unit,) = unit_ids(url)
    add_user(url, "ann")
    with session_factory(upgrade_db(url))() as db:
        for name in ("tom", "una", "val"):
            add_user(url, name)
            annotator = db.scalar(select(Annotator.id).where(Annotator.name == name))
            submit_held(db, annotator, unit, "yes", "dog", unit_images(url, unit)[:25])
    with running_server(url) as base:
        yield base, unit, url


def playing(page) -> list[int]:
    return page.evaluate("Array.from(document.querySelectorAll('#clips audio')).flatMap((a, i) => a.paused ? [] : [i + 1])")


def test_the_next_clip_plays_on_its_own_and_played_clips_are_marked(site):
    base, unit, url = site
    with chromium_page("--autoplay-policy=no-user-gesture-required") as page:
        log_in(page, base, "ann")
        page.goto(f"{base}/sound")
        page.click("#next-detector")
        page.wait_for_url(f"{base}/sound/{unit}")
        assert page.get_attribute("#judged-progress", "max") == "30"
        page.focus("#clips .clip")
        page.keyboard.press("p")
        # paused turns false at once, the "play" event that marks the clip comes a task later
        wait_until(page, "!document.querySelector('#clips audio').paused"
                         " && document.getElementById('played-count').textContent === '1'")
        assert page.locator("#clips .clip.played").count() == 1 and page.inner_text("#played-count") == "1"
        page.keyboard.press("y")                                  # judged: clip 2 takes over
        wait_until(page, "!document.querySelectorAll('#clips audio')[1].paused"
                         " && document.getElementById('played-count').textContent === '2'")
        assert playing(page) == [2] and page.inner_text("#played-count") == "2"
        assert page.evaluate("document.getElementById('judged-progress').value") == 1
        page.uncheck("#autoplay")                                 # the next clip waits when asked to
        page.focus("#clips .clip:nth-child(2)")
        page.keyboard.press("n")
        assert playing(page) == [] and page.inner_text("#played-count") == "2"
        assert page.inner_text("#judged-count") == "2"


def judged(page) -> list[str]:
    return page.evaluate("Array.from(document.querySelectorAll('#clips .clip')).map("
                         "(c) => (c.querySelector('input:checked') || {}).value || '')")


def test_undo_brings_the_detector_back_with_its_judgements(site):
    base, unit, url = site
    given = ["yes"] * 10 + ["no"] * 10 + ["unsure"] * 10
    with chromium_page() as page:
        log_in(page, base, "ann")
        page.goto(f"{base}/sound")
        page.click("#next-detector")
        page.wait_for_url(f"{base}/sound/{unit}")
        assert page.locator("#undo-form").count() == 0                  # nothing judged yet
        page.uncheck("#autoplay")
        page.focus("#clips .clip")
        for value in given:
            page.keyboard.press({"yes": "y", "no": "n", "unsure": "s"}[value])
        page.keyboard.press("Enter")
        page.wait_for_selector(f"text=Saved 30 sound judgements for {unit_label(url, unit)}")
        page.click("#undo-form button")                                  # the queue is empty: undo from there
        page.wait_for_url(f"{base}/sound/{unit}")
        assert page.is_visible("#previous-answer") and judged(page) == given
        assert page.inner_text("#judged-count") == "30"
        page.focus("#clips .clip:nth-child(30)")
        page.keyboard.press("y")                                         # change the last one, submit again
        page.keyboard.press("Enter")
        page.wait_for_selector(f"text=Saved 30 sound judgements for {unit_label(url, unit)}")
        page.click("#undo-form button")
        page.wait_for_url(f"{base}/sound/{unit}")
        assert judged(page) == given[:29] + ["yes"]
        assert page.locator("#undo-form").count() == 0                  # nothing left to take back


def test_judging_fast_leaves_no_console_error(site):
    base, unit, url = site
    errors = []
    with chromium_page("--autoplay-policy=no-user-gesture-required") as page:
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        log_in(page, base, "ann")
        page.goto(f"{base}/sound")
        page.click("#next-detector")
        page.wait_for_url(f"{base}/sound/{unit}")
        page.focus("#clips .clip")
        page.keyboard.press("p")
        for _ in range(12):                      # each judgement pauses the clip whose play() is still starting
            page.keyboard.press("y")
        page.wait_for_timeout(500)
        assert page.inner_text("#judged-count") == "12"
    assert not [e for e in errors if "play()" in e], errors
