"""The annotation queues against annotators who do not follow them (issue 16, items 6-8, 12)."""
from __future__ import annotations

from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app_helpers import add_user, default_campaign_id, login, seed_run, submit_held, unit_ids, unit_images
from backend.app import create_app
from backend.config import Settings
from backend.db.models import (Annotation, Annotator, SoundJudgement, SoundReservation, UnitImage, UnitReservation,
                               UnitSettlement)
from backend.db.session import session_factory, upgrade_db

JUDGES = ("j1", "j2", "j3", "j4", "j5")


def count(url, model, *where) -> int:
    with session_factory(upgrade_db(url))() as db:
        return db.scalar(select(func.count()).select_from(model).where(*where))


def take(client, token, task="/annotate") -> int | None:
    response = client.post(task, data={"csrf_token": token}, follow_redirects=False)
    return int(response.headers["location"].rsplit("/", 1)[1]) if response.status_code == 303 else None


def annotator_id(url, name) -> int:
    with session_factory(upgrade_db(url))() as db:
        return db.scalar(select(Annotator.id).where(Annotator.name == name))


def answer(client, token, unit, **data):
    return client.post(f"/units/{unit}/annotation", data={"answer": "no", "csrf_token": token, **data})


@pytest.fixture()
def url(tmp_path):
    url = seed_run(tmp_path, n_units=4, n_images=5)
    for name in ("ann", "bob", "cat", "dan", *JUDGES):
        add_user(url, name)
    return url


@pytest.fixture()
def app(url):
    return create_app(Settings(database_url=url))


def test_an_annotator_cannot_answer_a_unit_not_held_for_them(app, url):
    with TestClient(app) as ann:
        token = login(ann, "ann")
        held = take(ann, token)
        chosen = next(u for u in unit_ids(url) if u != held)
        response = answer(ann, token, chosen)
        assert response.status_code == 409 and "not held for you" in response.json()["detail"]
        assert count(url, Annotation) == 0
        assert answer(ann, token, held).status_code == 200


def test_a_get_of_the_queue_changes_nothing(app, url):
    with TestClient(app) as ann:
        token = login(ann, "ann")
        for path in ("/annotate", "/sound"):
            page = ann.get(path, follow_redirects=False)
            assert page.status_code == 200 and 'method="post"' in page.text
        assert count(url, UnitReservation) == 0 and count(url, SoundReservation) == 0
        unit = take(ann, token)
        assert ann.get("/annotate", follow_redirects=False).headers["location"] == f"/units/{unit}"  # the held one
        assert count(url, UnitReservation) == 1


def test_undo_goes_back_one_answer_only(app, url):
    with TestClient(app) as ann:
        token = login(ann, "ann")
        first = take(ann, token)
        answer(ann, token, first)
        second = take(ann, token)
        answer(ann, token, second)
        take(ann, token)
        undo = ann.post("/annotations/undo", data={"csrf_token": token}, follow_redirects=False)
        assert undo.headers["location"] == f"/units/{second}"
        again = ann.post("/annotations/undo", data={"csrf_token": token})
        assert again.status_code == 409 and "one answer only" in again.json()["detail"]
        assert count(url, Annotation, Annotation.unit_id == first) == 1          # the earlier answer stands
        assert answer(ann, token, second).status_code == 200                     # answered again ...
        assert ann.post("/annotations/undo", data={"csrf_token": token},          # ... it may be undone again
                        follow_redirects=False).status_code == 303


def test_undo_of_a_complete_unit_is_its_last_judges_for_a_grace_period(app, url):
    clients = {name: TestClient(app) for name in ("ann", "bob", "cat")}
    tokens = {name: login(client, name) for name, client in clients.items()}
    unit = None
    for name, client in clients.items():           # the most nearly complete unit first: all three get the same
        unit = take(client, tokens[name])
        assert answer(client, tokens[name], unit).status_code == 200
    refused = clients["ann"].post("/annotations/undo", data={"csrf_token": tokens["ann"]})   # an earlier judge
    assert refused.status_code == 409 and "has all its answers" in refused.json()["detail"]
    next_page = clients["ann"].post("/annotate", data={"csrf_token": tokens["ann"]}).text   # the next unit's page
    assert "/units/" in next_page and "undo-form" not in next_page         # ... who is not offered Undo
    next_page = clients["cat"].post("/annotate", data={"csrf_token": tokens["cat"]}).text
    assert 'id="undo-form"' in next_page                                   # the last judge is, and may undo
    undone = clients["cat"].post("/annotations/undo", data={"csrf_token": tokens["cat"]}, follow_redirects=False)
    assert undone.status_code == 303 and undone.headers["location"] == f"/units/{unit}"
    assert count(url, Annotation, Annotation.unit_id == unit) == 2         # the verdict stands on two answers again
    assert answer(clients["cat"], tokens["cat"], unit, answer="texture").status_code == 200
    for client in clients.values():
        client.close()


def test_the_last_judges_undo_ends_with_its_grace_period(url):
    app = create_app(Settings(database_url=url, last_judge_undo_seconds=0))
    clients = {name: TestClient(app) for name in ("ann", "bob", "cat")}
    tokens = {name: login(client, name) for name, client in clients.items()}
    unit = None
    for name, client in clients.items():
        unit = take(client, tokens[name])
        assert answer(client, tokens[name], unit).status_code == 200
    next_page = clients["cat"].post("/annotate", data={"csrf_token": tokens["cat"]}).text
    assert "/units/" in next_page and "undo-form" not in next_page         # past the grace: not offered ...
    refused = clients["cat"].post("/annotations/undo", data={"csrf_token": tokens["cat"]})
    assert refused.status_code == 409 and "seconds only" in refused.json()["detail"]   # ... nor done
    assert count(url, Annotation, Annotation.unit_id == unit) == 3
    for client in clients.values():
        client.close()


def test_undo_does_not_reach_an_old_answer(url):
    with TestClient(create_app(Settings(database_url=url, undo_minutes=0))) as ann:
        token = login(ann, "ann")
        answer(ann, token, take(ann, token))
        refused = ann.post("/annotations/undo", data={"csrf_token": token})
        assert refused.status_code == 409 and "minutes old" in refused.json()["detail"]


def make_detectors(url, units):
    """ann, bob and cat each say "dog" and mark all the images: every unit in `units` is a dog detector."""
    with session_factory(upgrade_db(url))() as db:
        for name in ("ann", "bob", "cat"):
            annotator = db.scalar(select(Annotator.id).where(Annotator.name == name))
            for unit in units:
                submit_held(db, annotator, unit, "yes", "dog", unit_images(url, unit))


def judge_all(client, token, unit, url):
    return client.post(f"/sound/{unit}", data={"csrf_token": token,
                                               **{f"audible_{i}": "yes" for i in unit_images(url, unit)}})


def test_the_sound_task_gives_each_detector_to_three_judges(app, url):
    detectors = unit_ids(url)[:2]
    make_detectors(url, detectors)
    clients = {name: TestClient(app) for name in JUDGES}
    tokens = {name: login(client, name) for name, client in clients.items()}
    handed = {name: take(client, tokens[name], "/sound") for name, client in clients.items()}
    # Five judges at once: three hold one detector, two the other; none gets a fourth seat.
    assert sorted(Counter(handed.values()).values()) == [2, 3] and set(handed.values()) == set(detectors)
    for name, client in clients.items():
        assert judge_all(client, tokens[name], handed[name], url).status_code == 200
    for name, client in clients.items():           # the rest: the one each has not judged, while it has a seat
        unit = take(client, tokens[name], "/sound")
        if unit is not None:
            assert judge_all(client, tokens[name], unit, url).status_code == 200
    with session_factory(upgrade_db(url))() as db:
        judges = dict(db.execute(select(UnitImage.unit_id, func.count(func.distinct(SoundJudgement.annotator_id)))
                                 .join(SoundJudgement, SoundJudgement.unit_image_id == UnitImage.id)
                                 .group_by(UnitImage.unit_id)).all())
    assert judges == {u: 3 for u in detectors}     # 3 judges each: not 4 or 5
    for client in clients.values():
        client.close()


def test_a_sound_unit_not_held_cannot_be_judged_or_shown(app, url):
    detectors = unit_ids(url)[:2]
    make_detectors(url, detectors)
    with TestClient(app) as judge:
        token = login(judge, "j1")
        held = take(judge, token, "/sound")
        other = next(u for u in detectors if u != held)
        refused = judge_all(judge, token, other, url)             # posting directly skips no queue
        assert refused.status_code == 409 and "not held for you" in refused.json()["detail"]
        page = judge.get(f"/sound/{other}", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/sound"
        assert judge_all(judge, token, held, url).status_code == 200
        page = judge.get(f"/sound/{held}", follow_redirects=False)    # judged: the form is not shown again
        assert page.status_code == 303 and page.headers["location"] == "/sound"
        assert count(url, SoundJudgement) == len(unit_images(url, held))


def test_sound_undo_takes_back_the_last_detector_once_while_it_lacks_judges(app, url):
    first, second = unit_ids(url)[:2]
    make_detectors(url, [first, second])
    clients = {name: TestClient(app) for name in JUDGES[:3]}
    tokens = {name: login(client, name) for name, client in clients.items()}
    j1, token = clients["j1"], tokens["j1"]
    held = [take(j1, token, "/sound")]
    assert judge_all(j1, token, held[0], url).status_code == 200
    held.append(take(j1, token, "/sound"))
    assert judge_all(j1, token, held[1], url).status_code == 200
    undone = j1.post("/sound/undo", data={"csrf_token": token}, follow_redirects=False)
    assert undone.status_code == 303 and undone.headers["location"] == f"/sound/{held[1]}"
    j1_judged = SoundJudgement.annotator_id == annotator_id(url, "j1")
    assert count(url, SoundJudgement, j1_judged) == len(unit_images(url, held[0]))
    assert count(url, SoundReservation) == 1 and take(j1, token, "/sound") == held[1]     # held for them again
    refused = j1.post("/sound/undo", data={"csrf_token": token})                         # not two steps back
    assert refused.status_code == 409 and "one answer only" in refused.json()["detail"]
    assert judge_all(j1, token, held[1], url).status_code == 200
    for name in ("j2", "j3"):                                   # the unit gets all its judges: j1's stand
        unit = take(clients[name], tokens[name], "/sound")
        while unit is not None and unit != held[1]:
            assert judge_all(clients[name], tokens[name], unit, url).status_code == 200
            unit = take(clients[name], tokens[name], "/sound")
        assert judge_all(clients[name], tokens[name], held[1], url).status_code == 200
    refused = j1.post("/sound/undo", data={"csrf_token": token})
    assert refused.status_code == 409 and "all its judges" in refused.json()["detail"]
    assert count(url, SoundJudgement, j1_judged) == len(unit_images(url, first)) + len(unit_images(url, second))
    for client in clients.values():
        client.close()


# --- Issue 25, items 3 and 8: settlements are for ties only; a settled unit is decided.

def settle_directly(url, unit):
    """A settlement as one made before settling was limited to ties (or by another process)."""
    with session_factory(upgrade_db(url))() as db:
        db.add(UnitSettlement(campaign_id=default_campaign_id(db, unit), unit_id=unit, answer="no"))
        db.commit()


def test_only_ties_are_settled(app, url):
    agreed, tied, open_unit = unit_ids(url)[:3]
    with session_factory(upgrade_db(url))() as db:
        ids = dict(db.execute(select(Annotator.name, Annotator.id)).all())
        for name, given in zip(("ann", "bob", "cat"), ("yes", "no", "texture")):
            submit_held(db, ids[name], agreed, "no", None, [])
            submit_held(db, ids[name], tied, given, "dog" if given == "yes" else None, [])
        submit_held(db, ids["ann"], open_unit, "no", None, [])
    add_user(url, "boss", is_admin=True)
    with TestClient(app) as boss:
        token = login(boss, "boss")
        for unit, why in ((agreed, "agreed on"), (open_unit, "all its answers yet")):
            refused = boss.post(f"/admin/units/{unit}/settle", data={"answer": "yes", "category": "sky",
                                                                     "csrf_token": token})
            assert refused.status_code == 409 and why in refused.json()["detail"] and "only ties" in refused.json()["detail"]
        settled = boss.post(f"/admin/units/{tied}/settle", data={"answer": "no", "csrf_token": token},
                            follow_redirects=False)
        assert settled.status_code == 303
    assert count(url, UnitSettlement) == 1 and count(url, UnitSettlement, UnitSettlement.unit_id == tied) == 1


def test_undo_does_not_reach_into_a_settled_unit(app, url):
    with TestClient(app) as ann:
        token = login(ann, "ann")
        unit = take(ann, token)
        assert answer(ann, token, unit).status_code == 200
        settle_directly(url, unit)
        refused = ann.post("/annotations/undo", data={"csrf_token": token})
        assert refused.status_code == 409 and "settled by an admin" in refused.json()["detail"]
        assert count(url, Annotation, Annotation.unit_id == unit) == 1


def test_a_settled_unit_leaves_the_annotation_queue(app, url):
    settled = unit_ids(url)[1]
    settle_directly(url, settled)
    with TestClient(app) as ann:
        token = login(ann, "ann")
        handed = []
        while (unit := take(ann, token)) is not None:
            handed.append(unit)
            assert answer(ann, token, unit).status_code == 200
    assert sorted(handed) == sorted(set(unit_ids(url)) - {settled})
