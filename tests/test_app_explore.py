"""Exploring units for every account: the unit page, the units browser, and the /api/v1 read API
(runs, layers, units, sound clusters, frames), paginated and documented at /docs."""
from __future__ import annotations

import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app_helpers import add_user, login, seed_run, submit_held, unit_ids, unit_images
from backend.app import create_app
from backend.app.deps import change
from backend.config import Settings
from backend.db import store
from backend.db.models import Annotator, Category, Dataset, Run, Unit
from backend.db.session import session_factory, upgrade_db
from model.sound.groups import SoundGroup


@pytest.fixture()
def explored(tmp_path):
    """Unit 0: a dog detector (3 of 3 say dog, all 5 images marked) labelled "dog" automatically too;
    unit 1: sky by truth (IoU 0.3); unit 2: three annotators say no; unit 3: nothing yet. Two sound clusters."""
    url = seed_run(tmp_path, n_units=4, n_images=5)
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    u0, u1, u2, u3 = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        for name in ("ann", "bob", "cat"):
            annotator = db.scalar(select(Annotator.id).where(Annotator.name == name))
            submit_held(db, annotator, u0, "yes", "dog", unit_images(url, u0))
            submit_held(db, annotator, u2, "no", None, [])
        category = {n: db.scalar(select(Category.id).where(Category.name == n)) for n in ("dog", "sky")}
        for unit_id, name, precision, iou in ((u0, "dog", 0.8, 0.5), (u1, "sky", 0.7, 0.3)):
            unit = db.get(Unit, unit_id)
            unit.auto_category_id, unit.auto_precision, unit.auto_iou = category[name], precision, iou
        run, dataset = db.scalar(select(Run)), db.scalar(select(Dataset))
        texture = np.linspace(0, 1, 502)
        store.replace_sound_clusters(db, run, dataset, [
            SoundGroup(0, "Cluster 0", np.array([0, 1]), 0.4, texture, None, [1], {"dog": 2}),
            SoundGroup(1, "Cluster 1", np.array([2, 3, 4]), 0.6, 1 - texture, None, [4])])
        db.commit()
    return url, (u0, u1, u2, u3)


@pytest.fixture()
def client(explored):
    with TestClient(create_app(Settings(database_url=explored[0]))) as client:
        login(client, "boss")         # an admin sees every unit's results (annotators: tests/test_app_blind.py)
        yield client


def text_of(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html[start:html.index("</section>", start)])).strip()


def test_unit_page_shows_images_clips_verdict_labels_and_neighbours(client, explored):
    _, (u0, u1, u2, u3) = explored
    page = client.get("/runs/1/units/conv5/0", headers={"accept": "text/html"})
    assert page.status_code == 200
    html = page.text
    images = unit_images(explored[0], u0)
    assert re.findall(r'<img src="/images/(\d+)"', html) == [str(i) for i in images]     # best first
    assert re.findall(r'<audio id="clip-\d+" preload="none" src="/clips/(\d+)"', html) == [str(i) for i in images]
    assert html.count('class="play"') == 5
    assert "A dog detector (characteristic sound): 100.0% of the top images show it." in text_of(html, "verdict")
    assert "3 annotators" in text_of(html, "verdict")
    assert "Against the truth: dog, precision 80.0%, IoU 0.500" in text_of(html, "automatic")
    assert 'id="previous-unit"' not in html and 'href="/runs/1/units/conv5/1"' in html
    assert "Not complete yet" in client.get("/runs/1/units/conv5/3").text
    last = client.get("/runs/1/units/conv5/3").text
    assert 'href="/runs/1/units/conv5/2"' in last and 'id="next-unit"' not in last
    assert "Not a detector: no." in client.get("/runs/1/units/conv5/2").text
    for path, message in (("/runs/1/units/conv5/9", "has no unit 9"), ("/runs/1/units/fc7/0", "no layer 'fc7'"),
                          ("/runs/5/units/conv5/0", "There is no run 5")):
        response = client.get(path)
        assert response.status_code == 404 and message in response.json()["detail"], path


def test_unit_pages_need_a_login(explored):
    with TestClient(create_app(Settings(database_url=explored[0]))) as client:
        assert client.get("/runs/1/units/conv5/0").status_code == 401
        assert client.get("/api/v1/runs").status_code == 401


def browser_units(client, **query) -> list[str]:
    html = client.get("/runs/1/units", params=query).text
    return re.findall(r'<tr id="unit-(\d+)">', html)


def test_units_browser_filters_and_sorts(client, explored):
    _, (u0, u1, u2, u3) = explored
    assert browser_units(client) == [str(u) for u in (u0, u1, u2, u3)]
    assert browser_units(client, label="SK") == [str(u1)]                      # automatic labels count too
    assert browser_units(client, min_precision=0.5) == [str(u0)]
    assert browser_units(client, min_iou=0.4) == [str(u0)]
    assert browser_units(client, min_agreement=1) == [str(u0), str(u2)]
    assert browser_units(client, characteristic="true") == [str(u0)]          # dog has one, sky not
    assert browser_units(client, characteristic="false") == [str(u1), str(u2), str(u3)]
    assert browser_units(client, sort="iou") == [str(u) for u in (u0, u1, u2, u3)]
    assert browser_units(client, sort="auto_precision", detectors_only="true") == [str(u0)]
    assert browser_units(client, sort="label")[:2] == [str(u0), str(u1)]      # dog, sky, then the unlabelled
    assert client.get("/runs/1/units", params={"sort": "colour"}).status_code == 422
    assert 'href="/runs/1/units/conv5/0">conv5 unit 0</a>' in client.get("/runs/1/units").text


def test_a_blank_filter_is_no_filter(client, explored):
    """The browser's form sends every box, empty ones and "any" as "": that lists everything, never a 422."""
    _, units = explored
    blank = {"label": "", "layer": "", "min_precision": "", "min_iou": " ", "min_agreement": "", "characteristic": "",
             "sort": "", "detectors_only": ""}
    page = client.get("/runs/1/units", params=blank, headers={"accept": "text/html"})
    assert page.status_code == 200 and re.findall(r'<tr id="unit-(\d+)">', page.text) == [str(u) for u in units]
    assert client.get("/api/v1/runs/1/units", params=blank).json()["total"] == 4
    assert browser_units(client, min_precision="", characteristic="true") == [str(units[0])]
    assert client.get("/results/1", params={"category": "", "min_precision": "", "min_iou": ""},
                      headers={"accept": "text/html"}).status_code == 200
    # A number out of range still says what is wrong, on a page that keeps the navigation.
    wrong = client.get("/runs/1/units", params={"min_precision": "2"}, headers={"accept": "text/html"})
    assert wrong.status_code == 422 and "min_precision" in wrong.text and '<a href="/runs">Units</a>' in wrong.text


def test_api_runs_and_layers(client):
    runs = client.get("/api/v1/runs").json()
    assert runs["total"] == 1 and runs["items"][0] | {"created_at": None} == {
        "id": 1, "name": "run-a", "model_kind": "caffenet-bn", "labels_kind": "cluster", "layers": 1, "created_at": None}
    assert client.get("/api/v1/runs/1/layers").json()["items"] == [
        {"name": "conv5", "num_units": 4, "input_size": 128, "rf_size": 163.0, "rf_radius": 27.0}]
    assert client.get("/api/v1/runs/2/layers").status_code == 404


def test_api_units_are_filtered_sorted_and_paginated(client, explored):
    _, (u0, u1, u2, u3) = explored
    first = client.get("/api/v1/runs/1/units", params={"limit": 3}).json()
    assert first["total"] == 4 and [u["id"] for u in first["items"]] == [u0, u1, u2]
    rest = client.get("/api/v1/runs/1/units", params={"limit": 3, "offset": 3}).json()
    assert [u["id"] for u in rest["items"]] == [u3]
    dog = first["items"][0]
    assert (dog["label"], dog["precision"], dog["agreement"], dog["auto_category"], dog["characteristic"]) == (
        "dog", 1.0, 1.0, "dog", True)
    assert dog["url"] == "/api/v1/runs/1/units/conv5/0" and len(dog["top_image_urls"]) == 5
    by_iou = client.get("/api/v1/runs/1/units", params={"min_iou": 0.2, "sort": "iou"}).json()
    assert [u["id"] for u in by_iou["items"]] == [u0, u1]
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"min_precision": 2}, {"sort": "x"}):
        assert client.get("/api/v1/runs/1/units", params=bad).status_code == 422, bad


def test_api_unit_has_images_clips_verdict_and_automatic_labels(client, explored):
    url, (u0, *_) = explored
    unit = client.get("/api/v1/runs/1/units/conv5/0").json()
    images = unit_images(url, u0)
    assert [i["url"] for i in unit["images"]] == [f"/images/{i}" for i in images]
    assert [i["clip_url"] for i in unit["images"]] == [f"/clips/{i}" for i in images]
    assert [i["rank"] for i in unit["images"]] == [1, 2, 3, 4, 5]          # as the page numbers them
    assert unit["verdict"] == {"answer": "yes", "category": "dog", "is_detector": True, "precision": 1.0,
                               "agreement": 1.0, "annotators": 3, "settled": False, "characteristic": True,
                               "image_contains": [True] * 5}
    assert unit["automatic"] == {"category": "dog", "precision": 0.8, "iou": 0.5, "netdissect_category": None,
                                 "netdissect_iou": None}
    assert (unit["previous"], unit["next"]) == (None, 1)
    assert client.get("/api/v1/runs/1/units/conv5/3").json()["verdict"] is None
    assert client.get(unit["images"][0]["url"]).headers["content-type"] == "image/jpeg"
    assert client.get(unit["images"][0]["clip_url"]).status_code == 200


def test_api_clusters_members_and_frames(client):
    clusters = client.get("/api/v1/runs/1/clusters").json()
    assert [(c["index"], c["name"], c["size"], c["sources"]) for c in clusters["items"]] == [
        (0, "Cluster 0", 2, {"dog": 2}), (1, "Cluster 1", 3, {})]
    assert len(clusters["items"][0]["texture"]) == 502
    assert clusters["items"][0]["texture"][-1] == pytest.approx(1.0) and clusters["items"][1]["texture"][-1] == 0
    members = client.get(clusters["items"][1]["members_url"], params={"limit": 2}).json()
    assert members["total"] == 3 and [m["id"] for m in members["items"]] == [3, 4]      # frame id = row + 1
    frame = client.get(members["items"][0]["url"]).json()
    assert (frame["id"], frame["video"], frame["split"], frame["clip_url"]) == (3, "v2", "test", "/frames/3/clip")
    assert client.get("/api/v1/runs/1/clusters/7/members").status_code == 404
    assert client.get("/api/v1/frames/999").status_code == 404


def test_docs_list_the_api(client):
    page = client.get("/docs").text
    for path in ("/api/v1/runs", "/api/v1/runs/{run_id}/units/{layer}/{index}", "/api/v1/runs/{run_id}/clusters",
                 "/api/v1/frames/{frame_id}", "/api/runs/{run_id}/annotations.csv"):
        assert f"<code>{path}</code>" in page, path


def test_results_and_the_annotation_pages_admin_view_link_unit_pages(explored):
    url, (u0, u1, *_) = explored
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        assert 'href="/runs/1/units/conv5/0">conv5 unit 0' in client.get("/results/1").text
        client.post("/annotate", data={"csrf_token": login(client, "boss")}, follow_redirects=False)
        held = client.get("/annotate", follow_redirects=False).headers["location"]
        unit_id = int(held.rsplit("/", 1)[1])
        index = unit_ids(url).index(unit_id)
        assert f'href="/runs/1/units/conv5/{index}">This unit' in client.get(held).text
    with TestClient(create_app(Settings(database_url=url))) as client:
        csrf = login(client, "ann")
        client.post("/annotate", data={"csrf_token": csrf}, follow_redirects=False)
        held = client.get("/annotate", follow_redirects=False).headers["location"]
        assert "This unit's page" not in client.get(held).text       # annotators label without the verdict


def test_counts_say_one_unit_not_one_units(tmp_path):
    url = seed_run(tmp_path, n_units=1, n_images=1)
    add_user(url, "boss", is_admin=True)
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        pages = {path: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", client.get(path, headers={"accept": "text/html"}).text))
                 for path in ("/runs/1/units", "/results", "/results/1", "/runs/1/units/conv5/0")}
    assert "1 of 1 unit " in pages["/runs/1/units"] and "Top 1 image " in pages["/runs/1/units/conv5/0"]
    assert "0 of 1 unit labelled" in pages["/results"] and "0 of 1 unit labelled" in pages["/results/1"]
    for path, text in pages.items():
        assert not re.search(r"\b1 (units|images|detectors|annotators|clips|frames|videos)\b", text), path


def test_units_browser_pages_keep_the_filters(tmp_path):
    """A run's 120 units come 50 to a page, every row a link to its unit, the filters kept from page to page."""
    url = seed_run(tmp_path, n_units=120, n_images=1, image_size=8)
    add_user(url, "boss", is_admin=True)

    def rows(html: str) -> list[int]:
        return [int(i) for i in re.findall(r'<tr id="unit-\d+"><td><a href="/runs/1/units/conv5/(\d+)">', html)]

    def link(html: str, rel: str) -> str:
        return re.search(rf'<a rel="{rel}" class="\w+-page" href="([^"]+)"', html).group(1).replace("&amp;", "&")

    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        first = client.get("/runs/1/units", params={"layer": "conv5", "min_iou": ""}).text
        assert rows(first) == list(range(50)) and "1-50 shown" in first and 'rel="prev"' not in first
        assert "layer=conv5" in link(first, "next") and "offset=50" in link(first, "next")
        second = client.get("/runs/1/units" + link(first, "next")).text
        last = client.get("/runs/1/units" + link(second, "next")).text
    assert rows(second) == list(range(50, 100)) and rows(last) == list(range(100, 120))
    assert 'rel="next"' not in last and "offset=50" in link(last, "prev") and "101-120 shown" in last


def test_a_drop_reads_as_the_signed_change_it_is():
    """The unit page's and cluster browser's ablation figures: a drop is a negative change, zero is +0."""
    assert (change(0.016), change(-0.002), change(0.0), change(None)) == ("-0.0160", "+0.0020", "+0.0000", "?")
    assert (change(0.3, "+.1f", 100), change(0.0, "+.1f", 100)) == ("-30.0", "+0.0")


def test_one_numbering_the_layer_and_channel_on_pages_api_and_exports(client, explored):
    """A unit is "conv5 unit 1" (its layer and 0-based channel) everywhere; its database id (here 2) is only in
    URLs and in the exports' `unit` field beside `index_in_layer`."""
    url, (u0, u1, u2, _) = explored
    assert (u1, u2) == (2, 3)                                   # ids differ from indices: a mix-up would show
    page = client.get("/runs/1/units/conv5/1").text
    assert "<h1>conv5 unit 1 " in page
    assert re.search(r'id="previous-unit"[^>]*>← conv5 unit 0</a>', page)
    assert re.search(r'id="next-unit"[^>]*>conv5 unit 2 →</a>', page)
    assert "channel" not in page and f"Unit {u1}" not in page
    api = client.get("/api/v1/runs/1/units/conv5/1").json()
    assert (api["id"], api["layer"], api["index"]) == (u1, "conv5", 1)
    no_answers = [a for a in client.get("/api/runs/1/annotations.json").json() if a["unit"] == u2]
    assert {(a["layer"], a["index_in_layer"]) for a in no_answers} == {("conv5", 2)}
    assert 'href="/runs/1/units/conv5/2">conv5 unit 2</a>' in client.get("/runs/1/units").text
    detectors = client.get("/api/runs/1/detectors.json").json()
    assert [(d["unit"], d["index_in_layer"]) for d in detectors] == [(u0, 0)]
