"""Results, review, categories and the exports (HTTP API and `ambient export`)."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from app_helpers import (PASSWORD, add_user, database_url, default_campaign_id, login, seed_run, submit_held, unit_ids,
                         unit_images, unit_label)
from backend.app import create_app
from backend.cli import app as cli
from backend.config import Settings
from backend.db import store
from backend.db.models import Annotation, Annotator, Category, Run, SoundJudgement, Unit
from backend.db.session import upgrade_db, session_factory


def answer(url, name, unit, answer="yes", category=None, marked=0):
    with session_factory(upgrade_db(url))() as db:
        annotator = db.scalar(select(Annotator.id).where(Annotator.name == name))
        submit_held(db, annotator, unit, answer, category, unit_images(url, unit)[:marked])


@pytest.fixture()
def labelled(tmp_path):
    """Unit 1: a dog detector (5/5 marked); unit 2: a tie; unit 3: a <script> category, 2/5 marked."""
    url = seed_run(tmp_path, n_units=4, n_images=5)
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    u1, u2, u3, _ = unit_ids(url)
    for name in ("ann", "bob", "cat"):
        answer(url, name, u1, category="dog", marked=5)
        answer(url, name, u3, category="Car", marked=2)
    answer(url, "ann", u2, "no")
    answer(url, "bob", u2, "texture")
    answer(url, "cat", u2, category="sky", marked=5)
    with session_factory(upgrade_db(url))() as db:
        db.get(Unit, u1).auto_category_id = db.scalar(select(Category.id).where(Category.name == "dog"))
        db.get(Unit, u1).auto_precision = 0.9
        boss = db.scalar(select(Annotator.id).where(Annotator.name == "boss"))
        for image in unit_images(url, u1):
            db.add(SoundJudgement(campaign_id=default_campaign_id(db, u1), annotator_id=boss, unit_image_id=image,
                                  audible="yes"))
        db.commit()
    return url, (u1, u2, u3)


@pytest.fixture()
def admin(labelled):
    client = TestClient(create_app(Settings(database_url=labelled[0])))
    token = login(client, "boss")
    yield client, token
    client.close()


def test_detectors_export_json_and_csv(admin, labelled):
    client, _ = admin
    detectors = client.get("/api/runs/1/detectors.json").json()
    unit = unit_ids(labelled[0])[0]      # the unit's database id (as in URLs); the pages name it by layer and index
    assert detectors == [{"unit": unit, "layer": "conv5", "index_in_layer": 0, "category": "dog", "precision": 1.0,
                          "annotators": 3, "agreement": 1.0, "characteristic": True}]
    rows = list(csv.DictReader(io.StringIO(client.get("/api/runs/1/detectors.csv").text)))
    assert [(r["unit"], r["index_in_layer"], r["category"], r["precision"], r["characteristic"]) for r in rows] == [
        (str(unit), "0", "dog", "1.0", "True")]
    assert ">conv5 unit 0</a>" in client.get("/results/1").text    # the export's layer and index_in_layer
    assert client.get("/api/runs/7/detectors.json").status_code == 404


def test_table1_json(admin):
    table = admin[0].get("/api/runs/1/table1.json").json()
    assert table["detectors"] == 1 and table["characteristic_detectors"] == 1
    assert table["clips_judged"] == 5 and table["audible_clips"] == 5
    assert table["videos_with_object_sound"] == 1.0
    assert [r["row"] for r in table["rows"]][0] == "# Detectors"


def test_results_pages_show_figures_table1_and_automatic_labels(admin):
    client, _ = admin
    page = client.get("/results", headers={"accept": "text/html"}).text
    assert 'class="plotly-figure"' in page and "cdn.plot.ly" not in page and "Table 1" in page
    run_page = client.get("/results/1").text
    assert 'id="histogram"' in run_page and 'id="gallery"' in run_page
    assert "automatic: dog (90.0%)" in run_page
    assert "Fleiss" in run_page and "1 unit in disagreement" in run_page


def test_settling_a_tie_makes_a_detector(admin, labelled):
    client, token = admin
    _, (u1, u2, _) = labelled
    review = client.get("/admin/review").text
    assert "unit-%d" % u2 in review
    link = re.search(rf'<li id="unit-{u2}">.*?<a class="unit-images-link" href="([^"]+)"', review, re.S).group(1)
    unit_page = client.get(link.split("#")[0]).text                   # the unit's page: all its top images
    assert f"<h1>{unit_label(labelled[0], u2)} " in unit_page
    assert unit_page.count('alt="top image ') == len(unit_images(labelled[0], u2))
    assert client.post(f"/admin/units/{u2}/settle", data={"answer": "yes", "category": "sky",
                                                         "csrf_token": token}).status_code == 200
    assert f"unit-{u2}" not in client.get("/admin/review").text
    categories = sorted(d["category"] for d in client.get("/api/runs/1/detectors.json").json())
    assert categories == ["dog", "sky"]      # cat's marks: the only one who named sky
    assert client.post(f"/admin/units/{u2}/settle", data={"answer": "yes", "category": "",
                                                         "csrf_token": token}).status_code == 422


def test_characteristic_flag_and_merging_new_names(admin, labelled):
    client, token = admin
    url, (u1, _, _) = labelled
    answer(url, "ann", unit_ids(url)[3], category="doggo", marked=1)
    with session_factory(upgrade_db(url))() as db:
        dog = db.scalar(select(Category).where(Category.name == "dog"))
        doggo = db.scalar(select(Category).where(Category.name == "doggo"))
    assert client.post(f"/admin/categories/{dog.id}/characteristic",
                       data={"characteristic": "false", "csrf_token": token}).status_code == 200
    assert client.get("/api/runs/1/detectors.json").json()[0]["characteristic"] is False
    page = client.get("/admin/categories").text
    assert 'id="new-names"' in page and "doggo" in page
    assert client.post(f"/admin/categories/{dog.id}/merge", data={"into": "cat", "csrf_token": token}).status_code == 422
    assert client.post(f"/admin/categories/{doggo.id}/merge",
                       data={"into": "nonexistent", "csrf_token": token}).status_code == 422
    assert client.post(f"/admin/categories/{doggo.id}/merge", data={"into": "dog", "csrf_token": token}).status_code == 200
    with session_factory(upgrade_db(url))() as db:
        assert db.scalar(select(Category).where(Category.name == "doggo")) is None
        assert "doggo" in db.scalar(select(Category.synonyms).where(Category.name == "dog"))
        assert db.scalar(select(Annotation.category_id).where(Annotation.unit_id == unit_ids(url)[3])) == dog.id


def test_names_are_escaped_in_pages(admin, labelled):
    client, token = admin
    url, _ = labelled
    assert client.post("/admin/users", data={"name": "x", "csrf_token": token,
                                             "your_password": PASSWORD}).status_code == 200
    with session_factory(upgrade_db(url))() as db:     # a hostile name that slipped in some other way
        db.add(Category(name="<img src=x onerror=alert(1)>", synonyms=""))
        db.commit()
    page = client.get("/admin/categories").text
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror" in page


def test_export_command(labelled, tmp_path):
    url, _ = labelled
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "run-a", "--format", "json", "--db", url])
    assert result.exit_code == 0, result.output
    exported = json.loads(result.output)
    assert exported["detectors"][0]["category"] == "dog" and exported["table1"]["detectors"] == 1
    result = runner.invoke(cli, ["export", "1", "--format", "csv", "--db", url, "--out", str(tmp_path / "d.csv")])
    assert result.exit_code == 0 and (tmp_path / "d.csv").read_text().startswith("unit,layer,index_in_layer,category")
    for args, message in ((["export", "nope", "--db", url], "no run called 'nope'"),
                          (["export", "1", "--format", "xml", "--db", url], "choose csv or json")):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_user_add_command(tmp_path):
    url = database_url(tmp_path, "users.db")
    upgrade_db(url)                   # `ambient db upgrade`, once per deployment
    runner = CliRunner()
    result = runner.invoke(cli, ["user", "add", "alice", "--admin", "--db", url])
    assert result.exit_code == 0 and "Added admin alice with password: " in result.output
    result = runner.invoke(cli, ["user", "add", "alice", "--password", "long enough tulip", "--db", url])
    assert result.exit_code == 2 and "already an account" in result.output
    result = runner.invoke(cli, ["user", "add", "bob", "--password", "short", "--db", url])
    assert result.exit_code == 2 and "at least 8" in result.output
    for common in ("12345678", "password", " " * 8, "Password123", "aaaaaaaaaa"):   # issue 16: all were accepted
        result = runner.invoke(cli, ["user", "add", "bob", "--password", common, "--db", url])
        assert result.exit_code == 2 and ("too easy" in result.output or "only spaces" in result.output), common


def set_auto_labels(url, labels):
    """labels: unit id -> (category, precision, iou), as `ambient dissect --truth` stores them."""
    with session_factory(upgrade_db(url))() as db:
        for unit_id, (category, precision, iou) in labels.items():
            unit = db.get(Unit, unit_id)
            unit.auto_category_id = db.scalar(select(Category.id).where(Category.name == category))
            unit.auto_precision, unit.auto_iou = precision, iou
        db.commit()


def test_before_any_labels_the_results_pages_say_what_will_appear(tmp_path):
    url = seed_run(tmp_path, n_units=3, n_images=5)
    add_user(url, "boss", is_admin=True)
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        run, every_run = client.get("/results/1").text, client.get("/results").text
    # No flat line on a -1..1 axis, no table of headers only: what will appear, and when.
    assert 'id="threshold-curve"' not in run and 'id="threshold-curve"' not in every_run
    assert 'id="no-threshold-curve"' in run and 'id="no-detectors"' in every_run
    assert "0 of 3 units have all their annotators so far" in re.sub(r"\s+", " ", run)
    assert 'id="no-labelled-units"' in run and '<table id="units">' not in run


def test_run_page_shows_automatic_labels_before_any_annotation(tmp_path):
    url = seed_run(tmp_path, n_units=5, n_images=5)
    add_user(url, "boss", is_admin=True)
    u0, u1, u2, u3, _ = unit_ids(url)
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        page = client.get("/results/1").text
        assert 'id="automatic"' not in page and "Automatic labels (from the demo world" not in page

        # dog and car have a characteristic sound, sky does not; car's 0.3 is below the 0.6 threshold.
        set_auto_labels(url, {u0: ("sky", 0.7, 0.25), u1: ("dog", 0.95, 0.5), u2: ("car", 0.3, 0.05),
                              u3: ("dog", 0.6, 0.125)})
        page = client.get("/results/1").text
    assert "Automatic labels (from the demo world's truth)" in page
    assert '<b id="auto-detector-count">3</b> of 4 automatically labelled units' in page
    assert '<b id="auto-characteristic-count">2</b>' in page and '<b id="auto-silent-count">1</b>' in page
    assert 'id="auto-histogram"' in page and "Automatic detectors per category, run-a (3 detectors" in page
    table = page[page.index('id="auto-units"'):page.index("</table>", page.index('id="auto-units"'))]
    rows = [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r'<tr id="auto-unit-\d+">(.*?)</tr>', table, re.S)]
    assert [[cells[0]] + cells[2:] for cells in rows] == [           # most precise first; car is below 0.6
        ["conv5 unit 1", "dog", "95.0%", "0.500", "*"],
        ["conv5 unit 0", "sky", "70.0%", "0.250", ""],
        ["conv5 unit 3", "dog", "60.0%", "0.125", "*"]]
    assert f'id="auto-unit-{u2}"' not in table
    assert "No detectors yet." in page                # no human labels: the rest of the page is unchanged


def test_run_name_says_what_the_run_is():
    from datetime import datetime

    from backend.publish import run_name

    trained = {"label_kind": "cluster", "num_outputs": 30, "preset": "demo"}
    assert run_name(Path("/srv/ambient/jobs/7/run"), "caffenet-bn", trained, datetime(2026, 12, 3, 9, 30)) == \
        "jobs/7/run · caffenet-bn on 30 sound clusters, demo preset · 2026-12-03 09:30"
    assert run_name(Path("/srv/nets/alexnet-places"), "torchvision:alexnet", {}, datetime(2026, 12, 3, 9, 30)) == \
        "nets/alexnet-places · torchvision:alexnet (not trained here) · 2026-12-03 09:30"


def test_admins_rename_runs_and_results_show_held_out_accuracy(admin, labelled):
    client, csrf = admin
    url = labelled[0]
    with session_factory(upgrade_db(url))() as db:
        db.get(Run, 1).metrics = {"test_accuracy": 0.257, "chance": 0.033, "majority": 0.057, "epoch": 12}
        store.upsert_run(db, Path("/srv/nets/alexnet"), "torchvision:alexnet", None, {}, None)   # no training here
        db.commit()
    text = lambda path: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", client.get(path).text))
    expected = "Held-out accuracy 25.7% against 3.3% chance and 5.7% for always the majority label (4.5x the majority), after epoch 12"
    assert expected in text("/results/1") and expected in text("/results")
    assert "No held-out accuracy: this network was not trained here" in text("/results/2")
    renamed = client.post("/results/1/name", data={"name": "  sound  net, seed 0 ", "csrf_token": csrf},
                          headers={"accept": "text/html"})
    assert renamed.status_code == 200 and "Run 1 is now called sound net, seed 0." in renamed.text
    for path in ("/results", "/runs", "/admin/review"):
        assert "sound net, seed 0" in text(path), path
    assert client.post("/results/1/name", data={"name": " ", "csrf_token": csrf}).status_code == 422
    with TestClient(create_app(Settings(database_url=url))) as annotator:
        annotator_csrf = login(annotator, "ann")
        assert annotator.post("/results/1/name", data={"name": "mine", "csrf_token": annotator_csrf}).status_code == 403


def test_long_lists_on_a_run_page_are_folded_and_every_unit_is_a_link(tmp_path):
    url = seed_run(tmp_path, n_units=30, n_images=1, image_size=8)
    add_user(url, "boss", is_admin=True)
    set_auto_labels(url, {unit: ("dog", 0.9, 0.5) for unit in unit_ids(url)})
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        page = client.get("/results/1").text
        filtered = client.get("/results/1", params={"category": "dog"}).text
    for list_id, summary in (("auto-label-list", "30 units: show them"), ("auto-units-list", "30 automatic detectors: show them")):
        assert f'<details class="folded" id="{list_id}"><summary>{summary}</summary>' in page
    links = re.findall(r'<tr id="auto-label-\d+"><td><a href="/runs/1/units/conv5/(\d+)">', page)
    assert sorted(map(int, links)) == list(range(30))
    assert 'id="auto-label-list"' not in filtered and filtered.count('<tr id="auto-label-') == 30   # asked for: open
