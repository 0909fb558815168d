"""Issue 17 item 5 and the sound task: the run page's automatic labels (both scores) beside the human label,
their agreement and filters; units of still images (no clips) have no sound task, and the page says why."""
from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app_helpers import add_user, login, seed_run, submit_held, unit_ids, unit_images
from backend.app import create_app
from backend.config import Settings
from backend.db.models import Annotator, Category, Frame, Unit
from backend.db.session import session_factory, upgrade_db


def _label(db, unit_id, paper, precision, iou, netdissect, netdissect_iou):
    ids = dict(db.execute(select(Category.name, Category.id)).all())
    unit = db.get(Unit, unit_id)
    unit.auto_category_id, unit.auto_precision, unit.auto_iou = ids.get(paper), precision, iou
    unit.auto_netdissect_category_id, unit.auto_netdissect_iou = ids.get(netdissect), netdissect_iou


def _rows(page):
    table = page[page.index('id="auto-labels"'):]
    table = table[:table.index("</table>")]
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r'<tr id="auto-label-\d+">(.*?)</tr>', table, re.S)]


def test_run_page_lists_both_automatic_labels_beside_the_human_one_with_filters(tmp_path):
    url = seed_run(tmp_path, n_units=4, n_images=5)
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    u0, u1, u2, u3 = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        for name in ("ann", "bob", "cat"):       # people call unit 0 a dog detector
            annotator = db.scalar(select(Annotator.id).where(Annotator.name == name))
            submit_held(db, annotator, u0, "yes", "dog", unit_images(url, u0))
        _label(db, u0, "dog", 0.9, 0.30, "dog", 0.30)
        _label(db, u1, "sky", 0.7, 0.02, "car", 0.06)
        _label(db, u2, "car", 0.2, 0.01, None, 0.01)
        db.commit()
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        page = client.get("/results/1").text
        assert _rows(page) == [
            ["conv5 unit 0", "dog", "dog", "90.0%", "0.300", "dog", "0.300", "human = paper = ND"],
            ["conv5 unit 1", "—", "sky", "70.0%", "0.020", "car", "0.060", "none"],
            ["conv5 unit 2", "—", "car", "20.0%", "0.010", "—", "0.010", "—"]]
        assert [r[0] for r in _rows(client.get("/results/1?category=car").text)] == [
            "conv5 unit 1", "conv5 unit 2"]            # either label
        assert [r[0] for r in _rows(client.get("/results/1?min_precision=0.6&min_iou=0.05").text)] == [
            "conv5 unit 0", "conv5 unit 1"]
        assert client.get("/results/1?min_iou=2").status_code == 422


def test_units_of_still_images_have_no_sound_task_and_the_page_says_why(tmp_path):
    url = seed_run(tmp_path, n_units=2, n_images=5)
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    u0, _ = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        for name in ("ann", "bob", "cat"):
            annotator = db.scalar(select(Annotator.id).where(Annotator.name == name))
            submit_held(db, annotator, u0, "yes", "dog", unit_images(url, u0))
        db.execute(update(Frame).values(clip_path=None, video_id=None))     # a folder of still images
        db.commit()
    with TestClient(create_app(Settings(database_url=url))) as client:
        token = login(client, "ann")
        # Unit 0 is a detector, but its images have no clips: the queue skips it and says why.
        start = client.post("/sound", data={"csrf_token": token}, follow_redirects=False)
        assert start.status_code == 200 and "still images" in start.text and "no clips" in start.text
        assert client.get(f"/sound/{u0}", follow_redirects=False).status_code in (303, 404)   # not held: never shown
        image = unit_images(url, u0)[0]
        missing = client.get(f"/clips/{image}")
        assert missing.status_code == 404 and "still image" in missing.text
