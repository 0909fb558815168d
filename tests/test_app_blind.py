"""Blind annotators: until an annotator has answered a unit (and can no longer undo that answer), no page
or API response they can reach carries its verdict, other people's answers or its automatic labels;
admins see everything and choose, on the campaign page, when annotators may see every unit's results."""
from __future__ import annotations

import itertools
import re
from datetime import timedelta

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app_helpers import PASSWORD, add_user, login, seed_run, submit_held, unit_ids, unit_images
from backend.app import create_app
from backend.app.campaign import visibility
from backend.app.reservations import utcnow
from backend.app.tokens import create_token
from backend.config import Settings
from backend.db.models import Annotation, Annotator, Category, Unit
from backend.db.session import session_factory, upgrade_db

HUMAN, AUTO, NETDISSECT = "leakhuman", "leakauto", "leaknd"     # category names found nowhere else
# Everything that would tell an annotator what others said or what the automatic labels are.
LEAKS = (HUMAN, AUTO, NETDISSECT, "81.2%", "0.8123", "0.457", "0.346", "Against the truth", "Not a detector",
         "Not complete yet", "unresolved", "annotators ·")


@pytest.fixture()
def campaign(tmp_path):
    """Unit 0: tom, una and val call it a leakhuman detector, and it is labelled leakauto against the truth
    (precision 0.8123, IoU 0.4567) and leaknd by Network Dissection (IoU 0.3456); unit 1: leakauto too,
    two answers so far; unit 2: three say no, ann too, 20 minutes ago; unit 3: ann's latest answer, just now.
    dan has answered nothing; boss is an admin."""
    url = seed_run(tmp_path, n_units=4, n_images=5)
    for name in ("tom", "una", "val", "ann", "dan"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    u0, u1, u2, u3 = units = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        ids = dict(db.execute(select(Annotator.name, Annotator.id)).all())
        for name in ("tom", "una", "val"):
            submit_held(db, ids[name], u0, "yes", HUMAN, unit_images(url, u0))
            submit_held(db, ids[name], u2, "no", None, [])
        for name in ("tom", "una"):
            submit_held(db, ids[name], u1, "yes", HUMAN, unit_images(url, u1)[:2])
        submit_held(db, ids["ann"], u2, "no", None, [])
        db.execute(update(Annotation).where(Annotation.annotator_id == ids["ann"])
                   .values(created_at=utcnow() - timedelta(minutes=20)))
        submit_held(db, ids["ann"], u3, "texture", None, [])
        auto, netdissect = Category(name=AUTO), Category(name=NETDISSECT)
        db.add_all([auto, netdissect])
        db.flush()
        for unit_id in (u0, u1):
            unit = db.get(Unit, unit_id)
            unit.auto_category_id, unit.auto_precision, unit.auto_iou = auto.id, 0.8123, 0.4567
        unit = db.get(Unit, u0)
        unit.auto_netdissect_category_id, unit.auto_netdissect_iou = netdissect.id, 0.3456
        db.commit()
    return url, units


def leaks_in(text: str) -> list[str]:
    return [marker for marker in LEAKS if marker in text]


def html(client: TestClient, path: str, **params) -> str:
    response = client.get(path, params=params, headers={"accept": "text/html"})
    assert response.status_code == 200, (path, response.status_code)
    return response.text


def every_get_path(app, units: list[int], images: list[int]) -> list[str]:
    """Every GET route of the app, its path parameters filled with this campaign's ids (static files aside)."""
    values = {"run_id": ["1"], "layer": ["conv5"], "index": ["0", "1", "2", "3"], "unit_id": [str(u) for u in units],
              "image_id": [str(i) for i in images], "frame_id": ["1"], "sample_id": ["1"], "job_id": ["1"],
              "token_id": ["1"], "category_id": ["1"], "account_id": ["1"], "campaign_id": ["1"],
              "cluster_id": ["1"]}
    paths = []
    for route in iter_route_contexts(app.routes):
        if "GET" not in (route.methods or ()) or route.path.startswith("/static"):
            continue
        names = re.findall(r"{(\w+)}", route.path)
        for combination in itertools.product(*(values[name] for name in names)):
            path = route.path
            for name, value in zip(names, combination):
                path = path.replace(f"{{{name}}}", value)
            paths.append(path)
    return paths


def test_an_annotator_who_answered_nothing_sees_no_result_anywhere(campaign):
    url, units = campaign
    settings = Settings(database_url=url)
    app = create_app(settings)
    images = [unit_images(url, u)[0] for u in units]
    with session_factory(upgrade_db(url))() as db:
        _, token = create_token(db, db.scalar(select(Annotator).where(Annotator.name == "dan")), "script", "read",
                                settings.token_days, settings)
    with TestClient(app) as client:
        csrf = login(client, "dan")
        paths = every_get_path(app, units, images)
        assert "/runs/1/units/conv5/0" in paths and "/api/v1/runs/1/units" in paths
        for path in paths:
            # The sound task names a finished detector's category: its verdict is final, and the unit task
            # never hands that unit to anyone again (README, "What annotators see").
            if path.startswith("/sound/"):
                continue
            for headers in ({"accept": "text/html"}, {}, {"Authorization": f"Bearer {token}"}):
                response = client.get(path, headers=headers)
                assert leaks_in(response.text) == [], (path, headers, response.status_code)
        # The unit task itself: the unit the queue hands dan.
        held = client.post("/annotate", data={"csrf_token": csrf}, headers={"accept": "text/html"})
        assert held.status_code == 200 and "/units/" in str(held.url) and leaks_in(held.text) == []
        # Filters and sorts see only what dan may see: no unit's membership gives a label away.
        for query in ({"label": "leak"}, {"min_precision": 0}, {"min_iou": 0}, {"min_agreement": 0},
                      {"characteristic": "false"}, {"detectors_only": "true"}):
            assert client.get("/api/v1/runs/1/units", params=query).json()["total"] == 0, query
            assert re.findall(r'<tr id="unit-(\d+)">', html(client, "/runs/1/units", **query)) == [], query
        for sort in ("label", "precision", "auto_precision", "iou", "agreement"):
            listed = client.get("/api/v1/runs/1/units", params={"sort": sort}).json()["items"]
            assert [u["id"] for u in listed] == units, sort       # all blind: unit order, whatever the sort
        unit = client.get("/api/v1/runs/1/units/conv5/0").json()
        assert (unit["blind"], unit["verdict"], unit["automatic"]) == (True, None, None)
        assert len(unit["images"]) == 5                               # the unit itself is there to look at
        assert all(u["blind"] and u["complete"] is None and u["label"] is None and u["auto_category"] is None
                   for u in client.get("/api/v1/runs/1/units").json()["items"])
        page = html(client, "/runs/1/units/conv5/0")
        assert 'id="blind-notice"' in page and 'id="verdict"' not in page and 'id="automatic"' not in page
        assert "hidden until you answer it" in html(client, "/runs/1/units")
        for admin_only in ("/results", "/results/1", "/api/runs/1/detectors.json", "/api/runs/1/annotations.json",
                           "/admin/review", "/admin/campaign"):
            assert client.get(admin_only).status_code == 403, admin_only


def test_an_annotator_sees_the_units_they_answered_once_their_answer_stands(campaign):
    url, (u0, u1, u2, u3) = campaign
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "ann")
        listed = {u["id"]: u for u in client.get("/api/v1/runs/1/units").json()["items"]}
        assert [i for i, u in listed.items() if not u["blind"]] == [u2]
        assert (listed[u2]["complete"], listed[u2]["answer"], listed[u2]["agreement"]) == (True, "no", 1.0)
        assert "Not a detector: no." in html(client, "/runs/1/units/conv5/2")
        # Unit 3 is her latest answer, still undoable: seeing the verdict and answering again would copy it.
        assert client.get("/api/v1/runs/1/units/conv5/3").json()["blind"] is True
        assert leaks_in(html(client, "/runs/1/units/conv5/0")) == []
        assert re.findall(r'<tr id="unit-(\d+)">', html(client, "/runs/1/units", label="leak")) == []
    # Once the undo window has passed, her latest answer stands and its unit opens.
    with TestClient(create_app(Settings(database_url=url, undo_minutes=0))) as client:
        login(client, "ann")
        unit = client.get("/api/v1/runs/1/units/conv5/3").json()
        assert unit["blind"] is False and unit["verdict"] is None and unit["automatic"]["category"] is None
        assert client.get("/api/v1/runs/1/units/conv5/0").json()["blind"] is True


def test_admins_see_everything_and_open_the_results_to_annotators(campaign):
    url, (u0, u1, u2, u3) = campaign
    app = create_app(Settings(database_url=url))
    with TestClient(app) as admin, TestClient(app) as dan:
        admin_csrf, dan_csrf = login(admin, "boss"), login(dan, "dan")
        unit = admin.get("/api/v1/runs/1/units/conv5/0").json()        # boss answered nothing, and sees all
        assert unit["blind"] is False and unit["verdict"]["category"] == HUMAN
        assert unit["automatic"] == {"category": AUTO, "precision": 0.8123, "iou": 0.4567,
                                     "netdissect_category": NETDISSECT, "netdissect_iou": 0.3456}
        assert "Blind" in html(admin, "/admin/campaign")
        # Annotators cannot open the results themselves.
        refused = dan.post("/admin/campaign/results", data={"is_open": "true", "csrf_token": dan_csrf})
        assert refused.status_code == 403
        assert dan.get("/api/v1/runs/1/units/conv5/0").json()["blind"] is True

        # Nor can an admin's session alone (issue 34, item 6): opening needs the admin's own password.
        for given in ({}, {"your_password": "not my password"}):
            refused = admin.post("/admin/campaign/results", data={"is_open": "true", "csrf_token": admin_csrf,
                                                                  **given})
            assert refused.status_code == 403 and "your own password" in refused.json()["detail"]
        assert dan.get("/api/v1/runs/1/units/conv5/0").json()["blind"] is True
        opened = admin.post("/admin/campaign/results", data={"is_open": "true", "csrf_token": admin_csrf,
                                                             "your_password": PASSWORD}, headers={"accept": "text/html"})
        assert "Annotators now see every unit" in opened.text and 'id="close-results"' in opened.text
        page = re.sub(r"<[^>]+>", "", html(dan, "/runs/1/units/conv5/0"))
        assert f"A {HUMAN} detector" in page and f"Against the truth: {AUTO}, precision 81.2%" in page
        assert f"Network Dissection: {NETDISSECT}, IoU 0.346" in page
        assert not any(u["blind"] for u in dan.get("/api/v1/runs/1/units").json()["items"])
        assert [u["id"] for u in dan.get("/api/v1/runs/1/units", params={"label": AUTO}).json()["items"]] == [u0, u1]

        closed = admin.post("/admin/campaign/results", data={"csrf_token": admin_csrf}, headers={"accept": "text/html"})
        assert "blind again" in closed.text
        assert leaks_in(html(dan, "/runs/1/units/conv5/0")) == [] and leaks_in(html(dan, "/runs/1/units")) == []


def test_visibility_follows_answers_and_the_undo_window(campaign):
    url, (u0, u1, u2, u3) = campaign
    with session_factory(upgrade_db(url))() as db:
        ann = db.scalar(select(Annotator).where(Annotator.name == "ann"))
        now = utcnow()
        assert visibility(db, ann, undo_minutes=10, now=now).answered == {u2}
        assert visibility(db, ann, undo_minutes=10, now=now + timedelta(minutes=11)).answered == {u2, u3}
        boss = db.scalar(select(Annotator).where(Annotator.name == "boss"))
        assert visibility(db, boss, undo_minutes=10).shows(u1)
