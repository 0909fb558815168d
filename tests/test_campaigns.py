"""Campaigns (issue 35): each run's layer is annotated in a campaign of its own; the queue hands out only
open campaigns' units; skips; holds released on logout and when idle; the API and the CLI; and the
migration that moves every existing answer into a campaign."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from app_helpers import add_campaign, add_user, database_url, login, seed_run, unit_ids
from backend.app import create_app
from backend.app.reservations import utcnow
from backend.cli import app as cli
from backend.config import Settings
from backend.db.models import (Annotation, Campaign, ImageMark, Run, SoundJudgement, UnitReservation, UnitSettlement,
                               UnitSkip)
from backend.db.session import session_factory, upgrade_db
from backend.app.units import skip_count
from test_app_annotate import next_unit, submit


def two_runs(tmp_path) -> tuple[str, list[int], list[int]]:
    """run-a (4 units) in its open default campaign, run-b (3 units) in none; the units of each."""
    url = seed_run(tmp_path, n_units=4, n_images=3, run_name="run-a")
    seed_run(tmp_path, n_units=3, n_images=3, run_name="run-b", campaign=False)
    with session_factory(upgrade_db(url))() as db:
        runs = {run.name: run.id for run in db.scalars(select(Run))}
    ids = unit_ids(url)
    return url, ids[:4], ids[4:], runs


@pytest.fixture()
def two(tmp_path):
    url, a_units, b_units, runs = two_runs(tmp_path)
    for name in ("ann", "bob"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    return url, a_units, b_units, runs


def answer_all(client, token, campaign: int | None = None) -> list[int]:
    """Answer every unit the queue hands `client` (in `campaign`); the units answered."""
    done = []
    data = {"csrf_token": token, **({"campaign": str(campaign)} if campaign else {})}
    while (response := client.post("/annotate", data=data, follow_redirects=False)).status_code == 303:
        unit = int(response.headers["location"].rsplit("/", 1)[1])
        assert submit(client, token, unit, answer="no", category="").status_code == 200
        done.append(unit)
    return done


def test_the_queue_hands_out_only_open_campaigns_units_and_a_new_run_enters_none(two):
    url, a_units, b_units, runs = two
    with TestClient(create_app(Settings(database_url=url))) as client:
        token = login(client, "ann")
        start = client.get("/annotate").text
        assert "run-a conv5" in start and "<b>4</b> of 4 units left for you" in start and "run-b" not in start
        assert sorted(answer_all(client, token)) == a_units            # run-b is in no campaign: in no queue
        with session_factory(upgrade_db(url))() as db:
            second = add_campaign(db, runs["run-b"], name="Sound conv5, spring")
        start = client.get("/annotate").text
        assert "<b>0</b> of 4 units left for you" in start and "Sound conv5, spring" in start
        first = next_unit(client, token)                 # no campaign named: the first with units left
        assert first in b_units
        page = client.get(f"/units/{first}").text
        assert "<b>3</b> of 3 units left in '<span id=\"campaign-name\">Sound conv5, spring</span>'" in page
        with session_factory(upgrade_db(url))() as db:
            assert db.scalar(select(UnitReservation.campaign_id)) == second


def test_the_same_unit_is_judged_again_in_a_second_campaign_of_its_run(two):
    url, a_units, _, runs = two
    with session_factory(upgrade_db(url))() as db:
        spring = db.scalar(select(Campaign.id))
        autumn = add_campaign(db, runs["run-a"], name="run-a again", judges=1)
    with TestClient(create_app(Settings(database_url=url))) as client:
        token = login(client, "ann")
        assert sorted(answer_all(client, token, spring)) == a_units
        assert sorted(answer_all(client, token, autumn)) == a_units
    with session_factory(upgrade_db(url))() as db:
        counts = dict(db.execute(select(Annotation.campaign_id, func.count()).group_by(Annotation.campaign_id)).all())
    assert counts == {spring: 4, autumn: 4}


def test_a_closed_campaign_or_one_for_named_annotators_hands_nothing_to_others(two):
    url, _, _, runs = two
    with session_factory(upgrade_db(url))() as db:
        spring = db.get(Campaign, db.scalar(select(Campaign.id)))
        spring.is_open = False
        db.commit()
        named = add_campaign(db, runs["run-b"], name="bob's", everyone=False, participants=("bob",))
    with TestClient(create_app(Settings(database_url=url))) as ann, TestClient(create_app(Settings(database_url=url))) as bob:
        ann_token, bob_token = login(ann, "ann"), login(bob, "bob")
        assert next_unit(ann, ann_token) is None and "no-campaigns" in ann.get("/annotate").text
        refused = ann.post("/annotate", data={"csrf_token": ann_token, "campaign": str(named)})
        assert refused.status_code == 403 and "not among" in refused.json()["detail"]
        assert next_unit(bob, bob_token) is not None


def test_skip_hands_the_unit_to_someone_else_and_is_no_judgement(tmp_path):
    url = seed_run(tmp_path, n_units=1, n_images=3)
    for name in ("ann", "bob"):
        add_user(url, name)
    with TestClient(create_app(Settings(database_url=url))) as ann, TestClient(create_app(Settings(database_url=url))) as bob:
        ann_token, bob_token = login(ann, "ann"), login(bob, "bob")
        unit = next_unit(ann, ann_token)
        skipped = ann.post(f"/units/{unit}/skip", data={"csrf_token": ann_token})
        assert skipped.status_code == 200 and skipped.json()["skipped"] is True
        assert next_unit(ann, ann_token) is None                       # never offered to the skipper again
        assert ann.post(f"/units/{unit}/skip", data={"csrf_token": ann_token}).status_code == 409
        assert next_unit(bob, bob_token) == unit                       # but to the others
    with session_factory(upgrade_db(url))() as db:
        assert db.scalar(select(func.count()).select_from(Annotation)) == 0   # not a judgement
        assert db.scalar(select(func.count()).select_from(UnitSkip)) == 1
        assert (skip_count(db, 1), skip_count(db, 2)) == (1, 0)        # counted per annotator (ann, bob)


def test_holds_are_released_on_logout_and_after_the_idle_time(tmp_path):
    url = seed_run(tmp_path, n_units=1, n_images=3)
    for name in ("ann", "bob"):
        add_user(url, name)
    settings = Settings(database_url=url)
    assert settings.hold_idle_minutes <= 10
    with TestClient(create_app(settings)) as ann:
        token = login(ann, "ann")
        unit = next_unit(ann, token)
        with session_factory(upgrade_db(url))() as db:
            expires = db.scalar(select(UnitReservation.expires_at))
            assert expires.replace(tzinfo=None) <= (utcnow() + timedelta(minutes=settings.hold_idle_minutes)).replace(tzinfo=None)
        assert ann.post("/annotate/hold", headers={"x-csrf-token": token}).json()["held_until"]
        ann.post("/logout", data={"csrf_token": token})
    with session_factory(upgrade_db(url))() as db:
        assert db.scalar(select(func.count()).select_from(UnitReservation)) == 0
    with TestClient(create_app(settings)) as bob:       # a closed tab: the hold runs out after the idle time
        token = login(bob, "bob")
        assert next_unit(bob, token) == unit
        with session_factory(upgrade_db(url))() as db:
            db.execute(UnitReservation.__table__.update().values(expires_at=utcnow() - timedelta(seconds=1)))
            db.commit()
        assert bob.get(f"/units/{unit}", follow_redirects=False).status_code == 303


def test_results_and_exports_are_per_campaign(two):
    url, a_units, _, runs = two
    with session_factory(upgrade_db(url))() as db:
        spring = db.scalar(select(Campaign.id))
        autumn = add_campaign(db, runs["run-a"], name="autumn", judges=1)
    with TestClient(create_app(Settings(database_url=url))) as client:
        token = login(client, "ann")
        for unit in a_units:
            response = client.post("/annotate", data={"csrf_token": token, "campaign": str(autumn)}, follow_redirects=False)
            unit = int(response.headers["location"].rsplit("/", 1)[1])
            submit(client, token, unit, answer="yes", category="dog", marked=[])
        login(client, "boss")
        run = runs["run-a"]
        assert client.get(f"/api/runs/{run}/annotations.json").json() == []              # the default: spring
        assert len(client.get(f"/api/runs/{run}/annotations.json?campaign={autumn}").json()) == 4
        assert client.get(f"/api/runs/{run}/table1.json").json()["campaign"] == "run-a conv5"
        assert client.get(f"/api/runs/{run}/table1.json?campaign={autumn}").json()["campaign"] == "autumn"
        assert "autumn" in client.get(f"/results/{run}").text
        assert "Answers of the campaign <b>autumn</b>" in client.get(f"/results/{run}?campaign={autumn}").text
        wrong = client.get(f"/api/runs/{runs['run-b']}/detectors.json?campaign={spring}")
        assert wrong.status_code == 404 and "campaign" in wrong.json()["detail"]


def test_the_campaigns_api_lists_and_creates_naming_the_bad_field(two):
    url, _, _, runs = two
    with TestClient(create_app(Settings(database_url=url))) as client:
        token = login(client, "ann")
        assert client.get("/api/v1/campaigns").status_code == 403
        token = login(client, "boss")
        headers = {"x-csrf-token": token}
        made = client.post("/api/v1/campaigns", headers=headers, json={"name": "Sound conv5, spring",
                                                                       "run_id": runs["run-b"], "open": True})
        assert made.status_code == 201, made.text
        items = client.get("/api/v1/campaigns").json()["items"]
        assert items[1] == {"id": made.json()["id"], "name": "Sound conv5, spring", "run_id": runs["run-b"],
                            "layer": "conv5", "judges": 3, "open": True, "units": 3, "complete": 0,
                            "gold_rate": 0.0, "adaptive": False}
        for body, field in (({"name": "x", "run_id": 99}, "run_id"), ({"name": "x", "run_id": 1, "layer": "fc9"}, "layer"),
                            ({"name": "x", "run_id": 1, "judges": 0}, "judges"), ({"run_id": 1}, "name"),
                            ({"name": "x", "run_id": 1, "gold_rate": 0.6}, "gold_rate")):
            refused = client.post("/api/v1/campaigns", headers=headers, json=body)
            assert refused.status_code == 422 and field in json.dumps(refused.json()), (body, refused.text)


def test_the_campaign_command_creates_lists_and_closes(tmp_path):
    url = seed_run(tmp_path, campaign=False)
    runner = CliRunner()
    made = runner.invoke(cli, ["campaign", "create", "Sound conv5, spring", "--run", "1", "--judges", "2", "--open",
                               "--db", url])
    assert made.exit_code == 0 and "Created campaign 1 'Sound conv5, spring'" in made.output and "open" in made.output
    listed = runner.invoke(cli, ["campaign", "list", "--db", url])
    assert "1\topen\trun 1\tconv5\t2 judges\t0 of 4 complete\tSound conv5, spring (default)" in listed.output
    assert "Closed campaign 1" in runner.invoke(cli, ["campaign", "close", "1", "--db", url]).output
    assert "closed" in runner.invoke(cli, ["campaign", "list", "--db", url]).output
    bad = runner.invoke(cli, ["campaign", "create", "x", "--run", "1", "--layer", "fc9", "--db", url])
    assert bad.exit_code == 2 and "--layer" in bad.output and "fc9" in bad.output
    assert runner.invoke(cli, ["campaign", "close", "7", "--db", url]).exit_code == 2


def test_the_migration_moves_every_answer_into_its_runs_campaign(tmp_path):
    """A database at e5c2b9d7a3f1 with answers, marks, settlements, sound judgements and a hold, upgraded:
    every row is kept, in one campaign per run and layer answered (the layer with most: the default)."""
    from alembic import command

    from backend.db.session import alembic_config, make_engine

    url = database_url(tmp_path)
    engine = make_engine(url)
    rows = ["INSERT INTO annotators (id, name, password_hash, is_admin, created_at) VALUES "
            "(1, 'ann', 'x', false, '2026-12-01'), (2, 'bob', 'x', false, '2026-12-01')",
            "INSERT INTO datasets (id, name, data_dir, created_at) VALUES (1, 'd', '/d', '2026-12-01')",
            "INSERT INTO frames (id, dataset_id, row, frame_index, time, image_path, split, silent) VALUES "
            "(1, 1, 0, 0, 0.0, 'f.jpg', 'test', false)",
            "INSERT INTO runs (id, name, run_dir, model_kind, metrics, created_at) VALUES "
            "(1, 'spring', '/r1', 'caffenet-bn', '{}', '2026-12-01'), (2, 'autumn', '/r2', 'caffenet-bn', '{}', '2026-12-01'),"
            "(3, 'unlabelled', '/r3', 'caffenet-bn', '{}', '2026-12-01')",
            "INSERT INTO layers (id, run_id, name, num_units, input_size, rf_size, rf_radius) VALUES "
            "(1, 1, 'conv5', 2, 128, 1.0, 1.0), (2, 2, 'conv4', 1, 128, 1.0, 1.0), (3, 2, 'conv5', 2, 128, 1.0, 1.0),"
            "(4, 3, 'conv5', 1, 128, 1.0, 1.0)",
            "INSERT INTO units (id, layer_id, \"index\") VALUES (1, 1, 0), (2, 1, 1), (3, 2, 0), (4, 3, 0), (5, 3, 1), (6, 4, 0)",
            "INSERT INTO unit_images (id, unit_id, rank, activation, masked_jpeg, frame_id) VALUES "
            + ", ".join(f"({u}, {u}, 0, 1.0, :jpeg, 1)" for u in range(1, 7)),
            "INSERT INTO annotations (id, unit_id, annotator_id, answer, category_id, created_at) VALUES "
            "(1, 1, 1, 'yes', 1, '2026-12-01'), (2, 1, 2, 'no', NULL, '2026-12-01'), (3, 3, 1, 'no', NULL, '2026-12-01'),"
            "(4, 4, 1, 'yes', 1, '2026-12-01'), (5, 5, 1, 'texture', NULL, '2026-12-01')",
            "INSERT INTO image_marks (id, annotation_id, unit_image_id) VALUES (1, 1, 1), (2, 4, 4)",
            "INSERT INTO unit_settlements (id, unit_id, answer, created_at) VALUES (1, 2, 'no', '2026-12-01')",
            "INSERT INTO sound_judgements (id, annotator_id, unit_image_id, audible, created_at) VALUES "
            "(1, 2, 1, 'yes', '2026-12-01'), (2, 2, 4, 'unsure', '2026-12-01')",
            "INSERT INTO unit_reservations (id, unit_id, annotator_id, expires_at) VALUES "
            "(1, 2, 2, '2099-01-01'), (2, 6, 2, '2099-01-01')"]
    with engine.begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, "e5c2b9d7a3f1")
        connection.execute(text("INSERT INTO categories (id, name, synonyms, stuff, characteristic_sound) "
                                "VALUES (1, 'dog', '', false, true)"))
        for statement in rows:
            connection.execute(text(statement), {"jpeg": b"\xff\xd8"})
    engine.dispose()
    with session_factory(upgrade_db(url))() as db:
        campaigns = {(c.run_id, c.layer): c for c in db.scalars(select(Campaign))}
        assert sorted(campaigns) == [(1, "conv5"), (2, "conv4"), (2, "conv5")]      # run 3 had no answers
        assert [c.name for c in campaigns.values()] == ["spring conv5", "autumn conv4", "autumn conv5"]
        assert all(c.is_open and c.judges == 3 and c.blind for c in campaigns.values())
        assert {key for key, c in campaigns.items() if c.is_default} == {(1, "conv5"), (2, "conv5")}
        by_id = {c.id: key for key, c in campaigns.items()}
        assert {a.id: by_id[a.campaign_id] for a in db.scalars(select(Annotation))} == {
            1: (1, "conv5"), 2: (1, "conv5"), 3: (2, "conv4"), 4: (2, "conv5"), 5: (2, "conv5")}
        assert sorted(db.execute(select(ImageMark.annotation_id, ImageMark.unit_image_id)).all()) == [(1, 1), (4, 4)]
        assert [(s.unit_id, by_id[s.campaign_id]) for s in db.scalars(select(UnitSettlement))] == [(2, (1, "conv5"))]
        assert sorted((j.id, by_id[j.campaign_id], j.audible) for j in db.scalars(select(SoundJudgement))) == [
            (1, (1, "conv5"), "yes"), (2, (2, "conv5"), "unsure")]
        # The hold of a unit whose run has a campaign moves with it; run 3's (no campaign) is dropped.
        assert [(r.unit_id, by_id[r.campaign_id]) for r in db.scalars(select(UnitReservation))] == [(2, (1, "conv5"))]


def test_the_demo_ends_with_its_run_in_an_open_campaign(tmp_path, capsys):
    from backend.commands.demo import _open_campaign

    url = seed_run(tmp_path, campaign=False)
    with session_factory(upgrade_db(url))() as db:
        run_dir = db.scalar(select(Run.run_dir))
    _open_campaign(url, Path(run_dir))
    assert "Opened the campaign 'run-a conv5' (id 1) for the demo's run" in capsys.readouterr().out
    _open_campaign(url, Path(run_dir))                 # a rerun keeps it
    assert "Annotators label the campaign 'run-a conv5' (id 1)" in capsys.readouterr().out
    with session_factory(upgrade_db(url))() as db:
        assert [(c.is_open, c.is_default, c.layer) for c in db.scalars(select(Campaign))] == [(True, True, "conv5")]


def test_the_job_pages_label_its_units_link_creates_or_opens_its_runs_campaign(two):
    from backend.db.models import Job

    url, _, _, runs = two
    with session_factory(upgrade_db(url))() as db:
        db.add_all([Job(kind="train", status="done", run_id=runs["run-a"]),
                    Job(kind="train", status="done", run_id=runs["run-b"])])
        db.commit()
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        assert 'id="annotate" href="/admin/campaigns/1"' in client.get("/admin/jobs/1").text
        assert f'id="annotate" href="/admin/campaigns/new?run={runs["run-b"]}"' in client.get("/admin/jobs/2").text
        form = client.get(f"/admin/campaigns/new?run={runs['run-b']}").text
        assert f'<option value="{runs["run-b"]}" selected>' in form
