"""The unit task forgives slips in Debian's Chromium: a yes without its object keeps every mark, the last
judge may undo within its grace period, and the instructions open over the task with `?`."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app_helpers import add_user, running_server, seed_run, submit_held, unit_ids, unit_label
from browser_helpers import chromium_page, log_in, needs_chromium
from backend.db.models import Annotation, Annotator
from backend.db.session import session_factory, upgrade_db

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


def marked(page) -> list[int]:
    return page.evaluate("Array.from(document.querySelectorAll('#grid input'))"
                         ".flatMap((b, i) => b.checked ? [i + 1] : [])")


def answers(url, unit) -> int:
    with session_factory(upgrade_db(url))() as db:
        return db.scalar(select(func.count()).select_from(Annotation).where(Annotation.unit_id == unit))


def test_yes_without_an_object_keeps_the_marks_and_asks_for_the_name(tmp_path):
    url = seed_run(tmp_path, n_units=1, n_images=12, image_size=32)
    add_user(url, "ann")
    (unit,) = unit_ids(url)
    with running_server(url) as base, chromium_page() as page:
        log_in(page, base, "ann")
        page.click("#next-unit")
        page.wait_for_url(f"{base}/units/{unit}")
        page.click("#grid li:nth-child(2) label")
        page.click("#grid li:nth-child(4) label", modifiers=["Shift"])
        page.keyboard.press("y")
        page.keyboard.press("Enter")                        # the name box: on to the images, no name typed
        page.keyboard.press("Enter")                        # submit: the page asks for the object instead
        assert page.is_visible("#missing-object")
        assert page.evaluate("document.activeElement.id") == "category"
        assert page.url == f"{base}/units/{unit}" and marked(page) == [2, 3, 4]
        assert page.is_checked("input[name=answer][value=yes]") and answers(url, unit) == 0
        page.keyboard.type("dog")
        page.keyboard.press("Enter")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"text=Saved {unit_label(url, unit)}: yes (dog, 3 images marked)")

        # Without the page's check (a form sent as it is), the server sends the task back, all of it kept.
        add_user(url, "bob")
        page.click("button:has-text('Log out')")
        log_in(page, base, "bob")
        page.click("#next-unit")
        page.wait_for_url(f"{base}/units/{unit}")
        page.click("#grid li:nth-child(5) label")
        page.check("input[name=answer][value=yes]")
        page.evaluate("document.getElementById('unit-form').submit()")       # skips the submit event's check
        page.wait_for_selector("#answer-error")
        assert "say which object" in page.inner_text("#answer-error")
        assert marked(page) == [5] and page.is_checked("input[name=answer][value=yes]")
        assert page.evaluate("document.activeElement.id") == "category"


def test_the_last_judge_can_undo_then_undo_is_no_longer_offered(tmp_path):
    url = seed_run(tmp_path, n_units=2, n_images=6, image_size=32)
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    first = unit_ids(url)[0]
    with session_factory(upgrade_db(url))() as db:
        for name in ("ann", "bob"):
            submit_held(db, db.scalar(select(Annotator.id).where(Annotator.name == name)), first, "no", None, [])
    with running_server(url, env={"AMBIENT_LAST_JUDGE_UNDO_SECONDS": "6"}) as base, chromium_page() as page:
        log_in(page, base, "cat")
        page.click("#next-unit")
        page.wait_for_url(f"{base}/units/{first}")           # the nearly complete unit first
        page.keyboard.press("t")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"text=Saved {unit_label(url, first)}: texture")
        assert answers(url, first) == 3 and page.is_visible("#undo-form")
        page.keyboard.press("u")
        page.wait_for_url(f"{base}/units/{first}")
        assert answers(url, first) == 2 and page.is_checked("input[name=answer][value=texture]")
        page.keyboard.press("n")
        page.keyboard.press("Enter")
        page.wait_for_selector(f"text=Saved {unit_label(url, first)}: no")
        assert page.is_visible("#undo-form")
        page.wait_for_selector("#undo-form", state="detached", timeout=15_000)   # gone when the grace ends
        page.keyboard.press("u")                                                  # so U does nothing
        page.reload()
        assert page.locator("#undo-form").count() == 0 and answers(url, first) == 3


def test_question_mark_opens_the_instructions_and_escape_closes_them(tmp_path):
    url = seed_run(tmp_path, n_units=1, n_images=6, image_size=32)
    add_user(url, "ann")
    with running_server(url) as base, chromium_page() as page:
        log_in(page, base, "ann")
        page.click("#next-unit")
        page.wait_for_url(f"{base}/units/*")
        assert not page.is_visible("#instructions-dialog")
        page.keyboard.press("?")
        assert page.is_visible("#instructions-dialog") and page.is_visible("#question-object")
        page.keyboard.press("y")                              # keys stay with the dialog while it is open
        assert not page.is_checked("input[name=answer][value=yes]")
        page.keyboard.press("Escape")
        assert not page.is_visible("#instructions-dialog")
        page.click("#show-instructions")
        assert page.is_visible("#instructions-dialog")
