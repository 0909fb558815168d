"""Exports of the raw annotations, the sound judgements and the per-unit verdicts, from the API and
`ambient export --what`: the exported counts equal the database's, CSV and JSON agree."""
from __future__ import annotations

import csv
import io
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app_helpers import add_user, default_campaign_id, login, seed_run, submit_held, unit_ids, unit_images
from backend.app import create_app
from backend.app.results import default_report
from backend.cli import app as cli
from backend.config import Settings
from backend.db.models import Annotation, Annotator, ImageMark, Run, SoundJudgement
from backend.db.session import session_factory, upgrade_db


@pytest.fixture()
def labelled(tmp_path):
    """Two runs: run-a's unit 0 a dog detector with sound judgements, unit 1 split three ways; run-b one answer
    (which run-a's exports must not include)."""
    url = seed_run(tmp_path, n_units=3, n_images=5)
    seed_run(tmp_path, n_units=1, n_images=5, run_name="run-b")
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    u0, u1, u2, other = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        people = {name: db.scalar(select(Annotator.id).where(Annotator.name == name)) for name in ("ann", "bob", "cat")}
        for name, marked in (("ann", 5), ("bob", 4), ("cat", 3)):
            submit_held(db, people[name], u0, "yes", "dog", unit_images(url, u0)[:marked])
        submit_held(db, people["ann"], u1, "no", None, [])
        submit_held(db, people["bob"], u1, "texture", None, [])
        submit_held(db, people["cat"], u1, "yes", "sky", unit_images(url, u1)[1:3])
        submit_held(db, people["ann"], other, "yes", "car", unit_images(url, other)[:1])
        for name in ("ann", "bob"):
            for image, audible in zip(unit_images(url, u0), ("yes", "no", "unsure", "yes", "yes")):
                db.add(SoundJudgement(campaign_id=default_campaign_id(db, u0), annotator_id=people[name],
                                      unit_image_id=image, audible=audible))
        db.commit()
    return url, (u0, u1, u2, other)


def database_counts(url: str) -> dict[str, int]:
    """run-a's rows, counted in the database itself."""
    with session_factory(upgrade_db(url))() as db:
        run = db.scalar(select(Run).where(Run.name == "run-a"))
        ids = [u.unit_id for u in default_report(db, run).units]
        return {"annotations": db.scalar(select(func.count()).select_from(Annotation)
                                         .where(Annotation.unit_id.in_(ids))),
                "marks": db.scalar(select(func.count()).select_from(ImageMark).join(Annotation)
                                   .where(Annotation.unit_id.in_(ids))),
                "judgements": db.scalar(select(func.count()).select_from(SoundJudgement)),
                "detectors": len(default_report(db, run).detectors)}


def test_exported_counts_equal_the_databases(labelled):
    url, (u0, u1, _, _) = labelled
    counts = database_counts(url)
    assert counts == {"annotations": 6, "marks": 14, "judgements": 10, "detectors": 1}
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        annotations = client.get("/api/runs/1/annotations.json").json()
        judgements = client.get("/api/runs/1/judgements.json").json()
        annotations_csv = list(csv.DictReader(io.StringIO(client.get("/api/runs/1/annotations.csv").text)))
        judgements_csv = list(csv.DictReader(io.StringIO(client.get("/api/runs/1/judgements.csv").text)))
        unit_page = client.get("/runs/1/units/conv5/1").text
    assert len(annotations) == len(annotations_csv) == counts["annotations"]
    assert sum(len(a["marked_ranks"]) for a in annotations) == counts["marks"]
    assert len(judgements) == len(judgements_csv) == counts["judgements"]
    cat = next(a for a in annotations if a["annotator"] == "cat" and a["unit"] == u1)
    images = unit_images(url, u1)
    assert (cat["answer"], cat["category"], cat["marked_ranks"], cat["marked_image_ids"]) == (
        "yes", "sky", [2, 3], images[1:3])              # ranks from 1, as the unit page numbers its images
    assert cat["created_at"].endswith("+00:00")
    for rank, image in zip(cat["marked_ranks"], cat["marked_image_ids"]):    # one numbering: the page's
        assert f'<img src="/images/{image}" loading="lazy" width="128" height="128" alt="top image {rank}"' in unit_page
    row = next(r for r in annotations_csv if r["annotator"] == "cat" and r["unit"] == str(u1))
    assert (row["marked_ranks"], row["marked_image_ids"]) == ("2;3", f"{images[1]};{images[2]}")
    no = next(r for r in annotations_csv if r["answer"] == "no")
    assert (no["category"], no["marked_ranks"]) == ("", "")
    assert sorted(j["audible"] for j in judgements if j["annotator"] == "bob") == ["no", "unsure", "yes", "yes", "yes"]
    assert {(j["unit"], j["rank"]) for j in judgements} == {(u0, r) for r in range(1, 6)}
    assert all(a["unit"] != labelled[1][3] for a in annotations)       # run-b's answer stays in run-b's export


def test_export_command_round_trip(labelled, tmp_path):
    url, _ = labelled
    counts = database_counts(url)
    runner = CliRunner()
    for what, key in (("annotations", "annotations"), ("judgements", "judgements"), ("detectors", "detectors")):
        result = runner.invoke(cli, ["export", "run-a", "--what", what, "--format", "json", "--db", url])
        assert result.exit_code == 0, result.output
        exported = json.loads(result.output)
        assert exported["run"] == "run-a" and len(exported[what]) == counts[key], what
        out = tmp_path / f"{what}.csv"
        result = runner.invoke(cli, ["export", "1", "--what", what, "--db", url, "--out", str(out)])
        assert result.exit_code == 0 and f"Wrote {counts[key]} {what} of run run-a" in result.output
        rows = list(csv.DictReader(io.StringIO(out.read_text())))
        assert len(rows) == counts[key], what
    assert "table1" in json.loads(runner.invoke(cli, ["export", "1", "--format", "json", "--db", url]).output)
    result = runner.invoke(cli, ["export", "1", "--what", "marks", "--db", url], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "choose annotations, judgements or detectors" in result.output


def test_exports_are_for_admins_and_linked_from_the_results_pages(labelled):
    url, _ = labelled
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "ann")
        for path in ("/api/runs/1/annotations.json", "/api/runs/1/annotations.csv", "/api/runs/1/judgements.json",
                     "/api/runs/1/judgements.csv"):
            assert client.get(path).status_code == 403, path
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        for page in ("/results", "/results/1"):
            html = client.get(page).text
            for path in ("annotations.csv", "annotations.json", "judgements.csv", "judgements.json"):
                assert f'href="/api/runs/1/{path}' in html, (page, path)     # (the run page adds ?campaign=ID)
        assert client.get("/api/runs/9/annotations.json").status_code == 404
        run_page = client.get("/results/1").text
        for what in ("raw annotations (CSV)", "raw annotations (JSON)", "sound judgements (JSON)"):
            assert what in run_page                      # the links say what they are, not only ".json"


def test_every_export_is_a_download_named_for_its_run(labelled):
    url, _ = labelled
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        for name in ("detectors.json", "table1.json", "annotations.json", "judgements.json", "representation.json",
                     "detectors.csv", "annotations.csv", "judgements.csv"):
            response = client.get(f"/api/runs/1/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-disposition"] == f'attachment; filename="run1_{name}"', name
