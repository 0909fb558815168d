"""The unit queue, submissions, undo, images, and the sound task, through the HTTP API."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app_helpers import add_user, login, seed_run, submit_held, unit_ids, unit_images
from backend.app import create_app
from backend.app.units import reserve_next_unit, utcnow
from backend.config import Settings
from backend.db.models import Annotation, Annotator, Campaign, Category, ImageMark, SoundJudgement, UnitReservation
from backend.db.session import upgrade_db, session_factory

NAMES = ("ann", "bob", "cat", "dan")


@pytest.fixture()
def app_url(tmp_path):
    url = seed_run(tmp_path, n_units=2, n_images=5)
    for name in NAMES:
        add_user(url, name)
    return url


@pytest.fixture()
def clients(app_url):
    app = create_app(Settings(database_url=app_url))
    made = {}
    for name in NAMES:
        client = TestClient(app)
        made[name] = (client, login(client, name))
    yield made
    for client, _ in made.values():
        client.close()


def next_unit(client, token, task="/annotate") -> int | None:
    """The unit the queue hands `client` (a POST: a GET changes nothing); None when none is left."""
    response = client.post(task, data={"csrf_token": token}, follow_redirects=False)
    if response.status_code == 200:
        return None
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def submit(client, token, unit, answer="yes", category="dog", marked=()):
    return client.post(f"/units/{unit}/annotation",
                       data={"answer": answer, "category": category, "marked": [str(m) for m in marked],
                             "csrf_token": token})


def count(url, model, *where):
    with session_factory(upgrade_db(url))() as db:
        return db.scalar(select(func.count()).select_from(model).where(*where))


def test_queue_gives_each_unit_to_three_different_people(clients, app_url):
    seen = {}
    for name in ("ann", "bob", "cat"):
        client, token = clients[name]
        units = []
        while (unit := next_unit(client, token)) is not None:
            images = unit_images(app_url, unit)
            assert submit(client, token, unit, marked=images[:3]).status_code == 200
            units.append(unit)
        seen[name] = units
    assert all(sorted(units) == unit_ids(app_url) for units in seen.values())
    # Every unit has its three answers: the fourth person finds nothing left.
    assert next_unit(*clients["dan"]) is None
    assert count(app_url, Annotation) == 6 and count(app_url, ImageMark) == 18


def test_unit_page_shows_images_lazily_and_no_earlier_answers(clients, app_url):
    ann, ann_token = clients["ann"]
    unit = next_unit(ann, ann_token)
    assert submit(ann, ann_token, unit, category="glowing orb").status_code == 200
    bob, bob_token = clients["bob"]
    assert next_unit(bob, bob_token) == unit          # the most nearly complete unit comes first
    page = bob.get(f"/units/{unit}").text
    assert page.count('loading="lazy"') == 5 and '<datalist id="category-list">' in page
    assert "glowing orb" not in page          # not even in the type-ahead list


def test_reservation_holds_a_unit_until_it_expires(clients, app_url):
    ann, ann_token = clients["ann"]
    bob, bob_token = clients["bob"]
    first = next_unit(ann, ann_token)
    assert next_unit(ann, ann_token) == first          # a reload gives the same unit back
    assert ann.get("/annotate", follow_redirects=False).headers["location"] == f"/units/{first}"
    assert next_unit(bob, bob_token) == first          # three slots: bob may share it ...
    with session_factory(upgrade_db(app_url))() as db:    # ... but a unit full of holds is skipped
        campaign = db.scalar(select(Campaign))
        for name_id in (3, 4):
            db.add(UnitReservation(campaign_id=campaign.id, unit_id=first, annotator_id=name_id,
                                   expires_at=utcnow() + timedelta(minutes=5)))
        db.commit()
        assert reserve_next_unit(db, 3, campaign).unit_id == first   # cat already holds it
        db.execute(UnitReservation.__table__.update().values(expires_at=utcnow() - timedelta(minutes=1)))
        db.commit()
        other = reserve_next_unit(db, 4, campaign)
        assert other.unit_id == first                       # expired holds free their slots


def test_replayed_form_is_refused(clients, app_url):
    ann, token = clients["ann"]
    unit = next_unit(ann, token)
    assert submit(ann, token, unit, answer="no", category="").status_code == 200
    replay = submit(ann, token, unit, answer="no", category="")
    assert replay.status_code == 409 and "already labelled" in replay.json()["detail"]
    assert count(app_url, Annotation) == 1


@pytest.mark.parametrize("change, status, message", [
    (dict(unit=9999), 404, "no unit 9999"),
    (dict(answer="maybe"), 422, "answer must be one of"),
    (dict(category=""), 422, "say which object"),
    (dict(category="<script>alert(1)</script>"), 422, "Category name rejected"),
    (dict(category="x" * 300), 422, "Category name rejected"),
    (dict(marked=["abc"]), 422, "image numbers"),
    (dict(foreign_marks=True), 422, "are not images of unit"),
])
def test_malformed_submissions_get_clear_4xx(clients, app_url, change, status, message):
    ann, token = clients["ann"]
    unit = next_unit(ann, token)
    other = next(u for u in unit_ids(app_url) if u != unit)
    marked = unit_images(app_url, other)[:2] if change.get("foreign_marks") else change.get("marked", ())
    response = submit(ann, token, change.get("unit", unit), answer=change.get("answer", "yes"),
                      category=change.get("category", "dog"), marked=marked)
    assert response.status_code == status and message in response.json()["detail"]
    assert count(app_url, Annotation) == 0


def test_submission_without_csrf_is_forbidden(clients, app_url):
    ann, token = clients["ann"]
    unit = next_unit(ann, token)
    assert submit(ann, "forged", unit).status_code == 403
    assert count(app_url, Annotation) == 0


def test_new_category_name_is_created_escaped_and_synonyms_resolve(clients, app_url):
    ann, token = clients["ann"]
    unit = next_unit(ann, token)
    assert submit(ann, token, unit, category="  Fire  Engine ").json()["category"] == "fire engine"
    bob, bob_token = clients["bob"]
    assert next_unit(bob, bob_token) == unit
    assert submit(bob, bob_token, unit, category="Automobile").json()["category"] == "car"   # a listed synonym
    assert count(app_url, Category, Category.name == "fire engine") == 1


def test_undo_withdraws_the_last_answer_and_gives_the_unit_back(clients, app_url):
    ann, token = clients["ann"]
    unit = next_unit(ann, token)
    submit(ann, token, unit, marked=unit_images(app_url, unit)[:2])
    following = next_unit(ann, token)
    assert following != unit
    response = ann.post("/annotations/undo", data={"csrf_token": token}, follow_redirects=False)
    assert response.headers["location"] == f"/units/{unit}"
    assert count(app_url, Annotation) == 0 and count(app_url, ImageMark) == 0
    assert next_unit(ann, token) == unit                     # held for them again, the other released
    assert count(app_url, UnitReservation) == 1
    assert submit(ann, token, unit, answer="texture", category="").status_code == 200
    assert ann.post("/annotations/undo", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert ann.post("/annotations/undo", data={"csrf_token": token}).status_code == 409   # one answer, one undo


def test_a_yes_without_its_object_comes_back_with_the_answer_and_marks_kept(clients, app_url):
    ann, token = clients["ann"]
    unit = next_unit(ann, token)
    images = unit_images(app_url, unit)
    page = ann.post(f"/units/{unit}/annotation", headers={"accept": "text/html"},
                    data={"answer": "yes", "category": " ", "marked": [str(images[1]), str(images[3])],
                          "csrf_token": token})
    assert page.status_code == 422 and 'id="answer-error"' in page.text and "say which object" in page.text
    assert re.search(r'value="yes" required checked', page.text)
    kept = re.findall(r'name="marked" value="(\d+)" checked', page.text)
    assert kept == [str(images[1]), str(images[3])]
    assert count(app_url, Annotation) == 0
    assert submit(ann, token, unit, marked=images[1:4:2]).json()["marked"] == 2     # still held: answered now


def test_undo_with_nothing_to_undo_is_409(clients):
    ann, token = clients["ann"]
    assert ann.post("/annotations/undo", data={"csrf_token": token}).status_code == 409


def test_images_stream_with_cache_headers(clients, app_url):
    ann, _ = clients["ann"]
    image = unit_images(app_url, unit_ids(app_url)[0])[0]
    response = ann.get(f"/images/{image}")
    assert response.headers["content-type"] == "image/jpeg" and response.content[:2] == b"\xff\xd8"
    assert "max-age" in response.headers["cache-control"]
    assert ann.get(f"/images/{image}", headers={"if-none-match": response.headers["etag"]}).status_code == 304
    assert ann.get("/images/99999").status_code == 404
    clip = ann.get(f"/clips/{image}")
    assert clip.status_code == 200 and clip.content[:4] == b"RIFF"


def test_sound_task_for_a_detector(clients, app_url):
    for name in ("ann", "bob", "cat"):      # all three mark 4 of 5 images: a dog detector at 80%
        client, token = clients[name]
        while (unit := next_unit(client, token)) is not None:
            submit(client, token, unit, category="dog", marked=unit_images(app_url, unit)[:4])
    dan, token = clients["dan"]
    unit = next_unit(dan, token, "/sound")
    page = dan.get(f"/sound/{unit}").text
    assert "<audio" in page and "dog" in page
    images = unit_images(app_url, unit)
    partial = {f"audible_{i}": "yes" for i in images[:2]}
    assert dan.post(f"/sound/{unit}", data={**partial, "csrf_token": token}).status_code == 422
    bad = {f"audible_{i}": "loud" for i in images}
    assert dan.post(f"/sound/{unit}", data={**bad, "csrf_token": token}).status_code == 422
    full = {f"audible_{i}": "yes" if k < 3 else "no" for k, i in enumerate(images)}
    assert dan.post(f"/sound/{unit}", data={**full, "csrf_token": token}).json() == {"unit": unit, "judged": 5}
    assert dan.post(f"/sound/{unit}", data={**full, "csrf_token": token}).status_code == 409
    assert count(app_url, SoundJudgement) == 5
    assert dan.get("/sound/99999").status_code == 404


def test_the_start_page_gives_the_instructions_admins_wrote_and_the_units_left(tmp_path):
    url = seed_run(tmp_path, n_units=3, n_images=2)
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    with session_factory(upgrade_db(url))() as db:
        ann = db.scalar(select(Annotator.id).where(Annotator.name == "ann"))
        submit_held(db, ann, unit_ids(url)[0], "no", None, [])
    app = create_app(Settings(database_url=url))
    with TestClient(app) as annotator, TestClient(app) as admin:
        login(annotator, "ann")
        start = annotator.get("/annotate", headers={"accept": "text/html"}).text
        assert "<b>2</b> of 3 units left for you" in start
        assert "Is one object present in many of the images?" in start and "Example: Most regions show a dog" in start
        csrf = login(admin, "boss")
        saved = admin.post("/admin/campaign/instructions", headers={"accept": "text/html"}, data={
            "csrf_token": csrf, "object_instructions": "Look for <one> thing.", "object_example": "A cat: yes.",
            "name_instructions": "", "name_example": "", "marks_instructions": "", "marks_example": ""})
        assert saved.status_code == 200 and "The instructions are saved" in saved.text
        start = annotator.get("/annotate", headers={"accept": "text/html"}).text
        assert "Look for &lt;one&gt; thing." in start and "Example: A cat: yes." in start       # escaped
        assert "For a yes, name the object" in start                                          # blank: the default
        assert annotator.post("/admin/campaign/instructions", data={"csrf_token": csrf}).status_code == 403
