"""Crowd quality control (issue 36): gold units mixed into each queue at the campaign's rate and never in Table 1;
gold accuracy through the HTTP API separates a random bot from a truthful one; excluding an annotator and including
them again; adaptive judging; Table 1 by either consensus; the CLI and its clear errors."""
from __future__ import annotations

import json
import random

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from annotation.aggregate import UnitAnswer
from annotation.quality import DOUBTFUL_GOLD_ACCURACY, DOUBTFUL_MIN_WRONG, DoubtHistory
from app_helpers import add_campaign, add_user, login, seed_run, unit_ids, unit_images
from backend.app import create_app
from backend.app.gold import GOLD_KEY, GoldPlan, Judging, set_gold
from backend.app.results import run_report
from backend.cli import app as cli
from backend.config import Settings
from backend.db.models import Annotator, Campaign, GoldUnit, Run, ServerSecret, Unit, UnitSettlement
from backend.db.session import session_factory, upgrade_db
from test_app_annotate import next_unit, submit


def campaign_with_gold(tmp_path, n_units: int, gold: dict[int, str], **fields) -> tuple[str, int, list[int]]:
    """A run of `n_units` units (3 images each) in one open campaign (`fields`), the units at positions `gold`
    gold with those answers ("no" or "yes:<category>"); returns the URL, the campaign and the units."""
    url = seed_run(tmp_path, n_units=n_units, n_images=3, campaign=False)
    units = unit_ids(url)
    with session_factory(upgrade_db(url))() as db:
        campaign_id = add_campaign(db, db.scalar(select(Run.id)), **fields)
        campaign = db.get(Campaign, campaign_id)
        for position, label in gold.items():
            answer, _, category = label.partition(":")
            set_gold(db, campaign, db.get(Unit, units[position]), answer, category or None, "typed")
    return url, campaign_id, units


def answer(client, token, unit: int, label: str, url: str):
    """Answer `unit` with `label` ("no", "texture", "yes:<category>"), marking every image for a yes."""
    kind, _, category = label.partition(":")
    marked = unit_images(url, unit) if kind == "yes" else ()
    response = submit(client, token, unit, answer=kind, category=category, marked=marked)
    assert response.status_code == 200, response.text


def everyone_answers(client, url: str, names, label_of) -> None:
    """Each of `names` logs in and answers every unit the queue hands them with `label_of(name, unit)`."""
    for name in names:
        token = login(client, name)
        while (unit := next_unit(client, token)) is not None:
            answer(client, token, unit, label_of(name, unit), url)
        client.post("/logout", data={"csrf_token": token})


def admin_headers(client) -> dict[str, str]:
    return {"X-CSRF-Token": login(client, "boss")}


def test_gold_units_come_at_the_gold_rate_each_once_and_never_count_in_table1(tmp_path):
    gold = {0: "yes:dog", 1: "yes:dog", 2: "yes:dog", 3: "yes:dog"}
    url, campaign_id, units = campaign_with_gold(tmp_path, 20, gold, gold_rate=0.2)
    gold_units = {units[i] for i in gold}
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    gold_met = {}
    with TestClient(create_app(Settings(database_url=url))) as client:
        for name in ("ann", "bob", "cat"):
            token = login(client, name)
            handed = []
            while (unit := next_unit(client, token)) is not None:
                handed.append(unit)
                # Gold units are answered "yes, dog" on every image: were they counted, each would be a detector.
                answer(client, token, unit, "yes:dog" if unit in gold_units else "no", url)
            assert len(handed) == len(set(handed))                       # each unit, gold or not, once
            # 16 other units: exactly one gold unit in each block of five answers (where in it is random), at most
            # one in the last, unfinished block, and none after the last other unit.
            on_gold = [unit in gold_units for unit in handed]
            assert [sum(on_gold[start:start + 5]) for start in range(0, 15, 5)] == [1, 1, 1]
            assert sum(on_gold[15:]) <= 1 and not on_gold[-1]
            assert len(handed) - sum(on_gold) == 16
            gold_met[name] = sum(on_gold)
            client.post("/logout", data={"csrf_token": token})
        headers = admin_headers(client)
        table = client.get(f"/api/v1/campaigns/{campaign_id}/table1", headers=headers)
        assert table.status_code == 200, table.text
        assert table.json()["detectors"] == 0 and table.json()["histogram"] == {}
        quality = client.get(f"/api/v1/campaigns/{campaign_id}/annotators", headers=headers).json()
        assert {row["name"]: (row["answers"], row["gold_answered"], row["gold_accuracy"]) for row in quality["items"]} == {
            name: (16 + gold_met[name], gold_met[name], 1.0) for name in ("ann", "bob", "cat")}
        assert all(row["median_seconds"] is not None and row["agreement"] == 1.0 for row in quality["items"])
    with session_factory(upgrade_db(url))() as db:
        campaign = db.get(Campaign, campaign_id)
        report = run_report(db, campaign.run, campaign)
        assert not {v.unit for v in report.verdicts} & gold_units
        assert len(report.verdicts) == 16 and report.table1.detectors == 0


def test_two_annotators_meet_gold_at_different_answers_each_where_their_seeded_plan_puts_it(tmp_path):
    """Where gold units fall is random per annotator (nobody can count their way to the next one) yet reproducible:
    the positions come from the server's stored key, the campaign and the annotator (backend/app/gold.py)."""
    url, campaign_id, units = campaign_with_gold(tmp_path, 52, {i: "no" for i in range(12)}, gold_rate=0.2)
    gold_units = set(units[:12])
    with session_factory(upgrade_db(url))() as db:      # a fixed key: the same positions on every run of the test
        db.add(ServerSecret(name=GOLD_KEY, value="the key of this test"))
        db.commit()
    for name in ("ann", "bob"):
        add_user(url, name)
    positions = {}
    with TestClient(create_app(Settings(database_url=url))) as client:
        for name in ("ann", "bob"):
            token = login(client, name)
            handed = []
            while (unit := next_unit(client, token)) is not None:
                handed.append(unit)
                answer(client, token, unit, "no", url)
            positions[name] = [i + 1 for i, unit in enumerate(handed) if unit in gold_units]
            assert len(handed) - len(positions[name]) == 40 and len(positions[name]) >= 8   # one per 5 answers
            client.post("/logout", data={"csrf_token": token})
    assert positions["ann"] != positions["bob"]
    with session_factory(upgrade_db(url))() as db:
        campaign = db.get(Campaign, campaign_id)
        for name, found in positions.items():
            annotator_id = db.scalar(select(Annotator.id).where(Annotator.name == name))
            assert GoldPlan.of(db, campaign, annotator_id).positions(found[-1]) == found


def test_skipping_a_gold_unit_spends_its_place_so_the_next_unit_tells_nothing(tmp_path):
    """Were the unit after a skipped gold unit gold again, skipping would tell gold units from the others."""
    url, _campaign_id, units = campaign_with_gold(tmp_path, 30, {i: "no" for i in range(10)}, gold_rate=0.5)
    gold_units = set(units[:10])
    add_user(url, "ann")
    skipped = 0
    with TestClient(create_app(Settings(database_url=url))) as client:
        token = login(client, "ann")
        unit = next_unit(client, token)
        while unit is not None and skipped < 3:
            if unit in gold_units:
                assert client.post(f"/units/{unit}/skip", data={"csrf_token": token}).status_code in (200, 303)
                skipped += 1
                unit = next_unit(client, token)
                assert unit not in gold_units
            answer(client, token, unit, "no", url)
            unit = next_unit(client, token)
    assert skipped == 3


def test_a_bot_answering_at_random_scores_below_a_truthful_bot_through_the_api(tmp_path):
    rng = random.Random(7)
    gold = {i: rng.choice(["no", "yes:dog", "yes:cat"]) for i in range(12)}
    url, campaign_id, units = campaign_with_gold(tmp_path, 36, gold, gold_rate=0.5, judges=2)
    truth = {units[i]: gold.get(i, "no") for i in range(len(units))}         # the world's truth, gold or not
    add_user(url, "truthful")
    add_user(url, "random")
    add_user(url, "boss", is_admin=True)
    with TestClient(create_app(Settings(database_url=url))) as client:
        for name in ("truthful", "random"):
            token = login(client, name)
            while (unit := next_unit(client, token)) is not None:
                answer(client, token, unit, truth[unit] if name == "truthful" else
                       rng.choice(["no", "texture", "yes:dog", "yes:cat"]), url)
            client.post("/logout", data={"csrf_token": token})
        quality = client.get(f"/api/v1/campaigns/{campaign_id}/annotators", headers=admin_headers(client)).json()
    scores = {row["name"]: row for row in quality["items"]}
    assert scores["truthful"]["gold_answered"] == scores["random"]["gold_answered"] == 12
    assert scores["truthful"]["gold_accuracy"] == 1.0
    assert scores["random"]["gold_accuracy"] < 0.6


def test_excluding_an_annotator_changes_verdicts_and_including_them_restores_them(tmp_path):
    url, campaign_id, units = campaign_with_gold(tmp_path, 1, {})
    for name in ("ann", "bob", "cat", "dan"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    with TestClient(create_app(Settings(database_url=url))) as client:
        for name, label in (("ann", "yes:dog"), ("bob", "yes:dog"), ("cat", "no")):
            token = login(client, name)
            answer(client, token, next_unit(client, token), label, url)
            client.post("/logout", data={"csrf_token": token})
        headers = admin_headers(client)

        def detectors() -> int:
            return client.get(f"/api/v1/campaigns/{campaign_id}/table1", headers=headers).json()["detectors"]

        assert detectors() == 1
        excluded = client.post(f"/api/v1/campaigns/{campaign_id}/exclusions", headers=headers, json={"name": "bob"})
        assert excluded.status_code == 201, excluded.text
        assert detectors() == 0                                  # ann's yes and cat's no: no verdict any more
        quality = client.get(f"/api/v1/campaigns/{campaign_id}/annotators", headers=headers).json()["items"]
        assert {row["name"]: row["excluded"] for row in quality} == {"ann": False, "bob": True, "cat": False}
        client.post("/logout", data={"csrf_token": headers["X-CSRF-Token"]})
        token = login(client, "dan")
        assert next_unit(client, token) == units[0]              # the unit went back to the queue
        client.post("/logout", data={"csrf_token": token})
        token = login(client, "bob")
        assert next_unit(client, token) is None                  # an excluded annotator is handed nothing
        client.post("/logout", data={"csrf_token": token})
        headers = admin_headers(client)
        included = client.post(f"/api/v1/campaigns/{campaign_id}/inclusions", headers=headers, json={"name": "bob"})
        assert included.status_code == 200, included.text
        assert detectors() == 1                                   # bob's answer counts again, nothing was deleted
        refused = client.post(f"/api/v1/campaigns/{campaign_id}/exclusions", headers=headers, json={"name": "nobody"})
        assert refused.status_code == 404 and "nobody" in refused.text


def test_adaptive_judging_stops_at_two_on_agreement_and_asks_a_third_on_disagreement(tmp_path):
    url, campaign_id, units = campaign_with_gold(tmp_path, 2, {}, adaptive=True)
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    agreeing, disputed = units
    labels = {("ann", agreeing): "no", ("bob", agreeing): "no", ("ann", disputed): "no", ("bob", disputed): "texture"}
    with TestClient(create_app(Settings(database_url=url))) as client:
        for name in ("ann", "bob"):
            token = login(client, name)
            while (unit := next_unit(client, token)) is not None:
                answer(client, token, unit, labels[name, unit], url)
            client.post("/logout", data={"csrf_token": token})
        token = login(client, "cat")
        assert next_unit(client, token) == disputed              # the agreed unit needs nobody else
        answer(client, token, disputed, "no", url)
        assert next_unit(client, token) is None
        client.post("/logout", data={"csrf_token": token})
        headers = admin_headers(client)
        table = client.get(f"/api/v1/campaigns/{campaign_id}/table1", headers=headers).json()
        quality = client.get(f"/api/v1/campaigns/{campaign_id}/annotators", headers=headers).json()
    assert quality["judgments_per_unit"] == table["judgments_per_unit"] == 2.5


def test_adaptive_judging_hands_no_third_judge_a_unit_its_first_two_are_still_answering(tmp_path):
    url, campaign_id, (first, second) = campaign_with_gold(tmp_path, 2, {}, adaptive=True)
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    with TestClient(create_app(Settings(database_url=url))) as base:
        people = {}
        for name in ("ann", "bob", "cat"):
            client = TestClient(base.app)
            people[name] = (client, login(client, name))
        assert next_unit(*people["ann"]) == first
        assert next_unit(*people["bob"]) == first       # the unit nearest completion: its second judge
        # Two are at work on it and may agree: a third person gets the other unit, not a third slot on it.
        assert next_unit(*people["cat"]) == second
        answer(*people["ann"], first, "no", url)
        answer(*people["bob"], first, "texture", url)   # they disagree: now the unit takes a third judge
        answer(*people["cat"], second, "no", url)
        assert next_unit(*people["cat"]) == first


@pytest.mark.parametrize("wrong_gold, doubtful", [((4,), False), ((3, 4), True)])
def test_adaptive_judging_asks_a_third_judge_where_a_judge_is_below_the_gold_bar_not_after_one_slip(
        tmp_path, wrong_gold, doubtful):
    """ann meets 4 gold units and answers the `wrong_gold`-th wrong: her last gold answer is wrong either way, but
    3 right of 4 (75%) is a careful annotator's slip and 2 of 4 is under DOUBTFUL_GOLD_ACCURACY. bob agrees with
    her on every unit; cat asks for more."""
    assert DOUBTFUL_MIN_WRONG == 2 and 0.5 < DOUBTFUL_GOLD_ACCURACY <= 0.75
    url, campaign_id, units = campaign_with_gold(tmp_path, 10, {i: "no" for i in range(4)}, gold_rate=0.5,
                                                 adaptive=True)
    gold_units, regular = set(units[:4]), set(units[4:])
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    with TestClient(create_app(Settings(database_url=url))) as client:
        handed = {}
        for name in ("ann", "bob", "cat"):
            token = login(client, name)
            handed[name], met = [], 0
            while (unit := next_unit(client, token)) is not None:
                handed[name].append(unit)
                met += unit in gold_units
                slip = name == "ann" and unit in gold_units and met in wrong_gold
                answer(client, token, unit, "texture" if slip else "no", url)
            client.post("/logout", data={"csrf_token": token})
        # At a gold rate of 0.5 ann met all four gold units among her first eight answers.
        assert set(handed["ann"]) == gold_units | regular and not set(handed["ann"][8:]) & gold_units
        assert set(handed["bob"]) & regular == regular
        assert set(handed["cat"]) & regular == (regular if doubtful else set())
        quality = client.get(f"/api/v1/campaigns/{campaign_id}/annotators", headers=admin_headers(client)).json()
    assert quality["judgments_per_unit"] == (3.0 if doubtful else 2.0)


def test_adaptive_judging_weighs_doubt_when_the_second_answer_came_so_a_closed_unit_stays_closed():
    doubt = DoubtHistory([("ann", sequence, False) for sequence in (10, 11, 12, 13)])   # doubtful from her answer 11
    rule = Judging(3, adaptive=True, doubt=doubt)
    assert rule.needed([UnitAnswer("ann", "no", sequence=5), UnitAnswer("bob", "no", sequence=6)]) == 2
    assert rule.needed([UnitAnswer("bob", "no", sequence=5), UnitAnswer("ann", "no", sequence=14)]) == 3
    assert rule.needed([UnitAnswer("ann", "no", sequence=5), UnitAnswer("bob", "no", sequence=20)]) == 3
    assert rule.needed([UnitAnswer("ann", "no", sequence=5), UnitAnswer("bob", "texture", sequence=6)]) == 3


def test_undo_follows_adaptive_judging_a_unit_two_agreeing_judges_closed_stays_closed(tmp_path):
    """Two agreeing answers complete a unit of an adaptive campaign: only its last judge may undo (briefly)."""
    from backend.app.units import undo_deadline
    from backend.db.models import Annotator

    url, campaign_id, (unit, _other) = campaign_with_gold(tmp_path, 2, {}, adaptive=True)
    for name in ("ann", "bob"):
        add_user(url, name)
    with TestClient(create_app(Settings(database_url=url))) as client:
        for name in ("ann", "bob"):
            token = login(client, name)
            assert next_unit(client, token) == unit
            answer(client, token, unit, "no", url)
            client.post("/logout", data={"csrf_token": token})
    with session_factory(upgrade_db(url))() as db:
        ids = dict(db.execute(select(Annotator.name, Annotator.id)).all())
        assert undo_deadline(db, ids["ann"], undo_minutes=10, last_judge_seconds=60) is None
        assert undo_deadline(db, ids["bob"], undo_minutes=10, last_judge_seconds=60) is not None


def test_table1_by_either_consensus_and_the_results_page_shows_krippendorffs_alpha(tmp_path):
    url, campaign_id, units = campaign_with_gold(tmp_path, 3, {})
    for name in ("ann", "bob", "cat"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    with TestClient(create_app(Settings(database_url=url))) as client:
        everyone_answers(client, url, ("ann", "bob", "cat"),
                         lambda name, unit: "yes:dog" if unit == units[0] or name != "cat" else "no")
        headers = admin_headers(client)
        for method in ("majority", "dawid-skene"):
            table = client.get(f"/api/v1/campaigns/{campaign_id}/table1?consensus={method}", headers=headers).json()
            assert table["consensus"] == method and table["detectors"] == 3 and table["histogram"] == {"dog": 3}
            assert table["krippendorff_alpha"] is not None and len(table["alpha_interval"]) == 2
        refused = client.get(f"/api/v1/campaigns/{campaign_id}/table1?consensus=vote", headers=headers)
        assert refused.status_code == 422 and "consensus" in refused.text
        run_id = client.get("/api/v1/campaigns", headers=headers).json()["items"][0]["run_id"]
        page = client.get(f"/results/{run_id}?consensus=dawid-skene").text
        assert "Krippendorff" in page and "Fleiss" in page and "<b>dawid-skene</b>" in page


def test_the_dawid_skene_table1_learns_from_gold_who_swaps_the_answers(tmp_path):
    """Two of three annotators say "no" for a dog detector and "yes, dog" for a unit that detects nothing: the
    majority believes them; the Dawid-Skene consensus, anchored on the gold units they also answered, does not."""
    gold = {0: "yes:dog", 1: "yes:dog", 2: "no", 3: "no"}
    url, campaign_id, units = campaign_with_gold(tmp_path, 12, gold, gold_rate=0.5)
    truth = {unit: gold.get(i, "yes:dog" if i < 7 else "no") for i, unit in enumerate(units)}
    swap = {"no": "yes:dog", "yes:dog": "no"}
    for name in ("ann", "liar1", "liar2"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    with TestClient(create_app(Settings(database_url=url))) as client:
        everyone_answers(client, url, ("ann", "liar1", "liar2"),
                         lambda name, unit: truth[unit] if name == "ann" else swap[truth[unit]])
        headers = admin_headers(client)
        table = {method: client.get(f"/api/v1/campaigns/{campaign_id}/table1?consensus={method}",
                                    headers=headers).json() for method in ("majority", "dawid-skene")}
    assert table["majority"]["detectors"] == 5                 # units 7-11, which detect nothing
    assert table["dawid-skene"]["detectors"] == 3              # units 4-6, the dogs


def test_the_campaign_command_makes_gold_excludes_and_refuses_bad_input(tmp_path):
    url = seed_run(tmp_path, n_units=3, n_images=3, campaign=False)
    add_user(url, "ann")
    runner = CliRunner(env={"COLUMNS": "300"})      # error boxes wide enough that no message is wrapped
    with session_factory(upgrade_db(url))() as db:
        run_id = db.scalar(select(Run.id))
    made = runner.invoke(cli, ["campaign", "create", "Spring", "--run", str(run_id), "--gold-rate", "0.1",
                               "--adaptive", "--open", "--db", url])
    assert made.exit_code == 0, made.output
    assert "gold rate 0.1" in made.output and "adaptive" in made.output
    too_much = runner.invoke(cli, ["campaign", "create", "Spring", "--run", str(run_id), "--gold-rate", "0.6",
                                   "--db", url])
    assert too_much.exit_code != 0 and "--gold-rate" in too_much.output and "0.5" in too_much.output
    no_truth = runner.invoke(cli, ["campaign", "create", "Spring", "--run", str(run_id), "--gold-from-truth",
                                   "--db", url])
    assert no_truth.exit_code != 0 and "dissection.json" in no_truth.output and "--gold-from-truth" in no_truth.output
    with session_factory(upgrade_db(url))() as db:
        [campaign_id] = db.scalars(select(Campaign.id).where(Campaign.name == "Spring")).all()  # refused: made none
    # The run's world truth: unit 0 a sure dog, unit 1 in between (left to people), unit 2 detecting nothing.
    (tmp_path / "run-a").mkdir(exist_ok=True)
    (tmp_path / "run-a" / "dissection.json").write_text(json.dumps([
        {"unit": 0, "category": "dog", "precision": 0.95, "iou": 0.3, "sounding": True, "layer": "conv5"},
        {"unit": 1, "category": "cat", "precision": 0.5, "iou": 0.1, "sounding": True, "layer": "conv5"},
        {"unit": 2, "category": "cat", "precision": 0.1, "iou": 0.0, "sounding": True, "layer": "conv5"}]))
    truth = runner.invoke(cli, ["campaign", "create", "Truth", "--run", str(run_id), "--gold-from-truth",
                                "--gold-rate", "0.2", "--db", url])
    assert truth.exit_code == 0 and "2 gold units from the truth" in truth.output, truth.output
    with session_factory(upgrade_db(url))() as db:
        made = db.scalar(select(Campaign).where(Campaign.name == "Truth"))
        assert sorted((db.get(Unit, g.unit_id).index, g.answer, g.source) for g in db.scalars(
            select(GoldUnit).where(GoldUnit.campaign_id == made.id))) == [(0, "yes", "truth"), (2, "no", "truth")]
    gold = runner.invoke(cli, ["campaign", "gold", str(campaign_id), "--unit", "conv5:1", "--answer", "yes",
                               "--category", "dog", "--db", url])
    assert gold.exit_code == 0, gold.output
    with session_factory(upgrade_db(url))() as db:
        row = db.scalar(select(GoldUnit).where(GoldUnit.campaign_id == campaign_id))
        assert (row.answer, row.source, db.get(Unit, row.unit_id).index) == ("yes", "typed", 1)
        gold_unit = row.unit_id
    unknown = runner.invoke(cli, ["campaign", "gold", str(campaign_id), "--unit", "conv5:1", "--answer", "yes",
                                  "--category", "flibbertigibbet", "--db", url])
    assert unknown.exit_code != 0 and "flibbertigibbet" in unknown.output and "--category" in unknown.output
    no_unit = runner.invoke(cli, ["campaign", "gold", str(campaign_id), "--unit", "conv5:99", "--answer", "no",
                                  "--db", url])
    assert no_unit.exit_code != 0 and "--unit" in no_unit.output
    # ann alone answered a unit: excluding her would leave it with no annotator. Her queue may hand her the gold
    # unit first (where gold falls is keyed by the database's own secret), which scores her and counts nowhere.
    with TestClient(create_app(Settings(database_url=url))) as client:
        token = login(client, "ann")
        while True:
            unit = next_unit(client, token)
            answer(client, token, unit, "no", url)
            if unit != gold_unit:
                break
    last = runner.invoke(cli, ["campaign", "exclude", str(campaign_id), "ann", "--db", url])
    assert last.exit_code != 0 and "last annotator" in last.output
    nobody = runner.invoke(cli, ["campaign", "include", str(campaign_id), "ann", "--db", url])
    assert nobody.exit_code != 0 and "not excluded" in nobody.output


@pytest.mark.parametrize("rate", [-0.1, 0.51])
def test_the_api_refuses_a_gold_rate_outside_zero_to_a_half(tmp_path, rate):
    url, campaign_id, _units = campaign_with_gold(tmp_path, 1, {})
    add_user(url, "boss", is_admin=True)
    with TestClient(create_app(Settings(database_url=url))) as client:
        headers = admin_headers(client)
        run_id = client.get("/api/v1/campaigns", headers=headers).json()["items"][0]["run_id"]
        refused = client.post("/api/v1/campaigns", headers=headers, json={"name": "x", "run_id": run_id,
                                                                          "gold_rate": rate})
        assert refused.status_code == 422 and "gold_rate" in refused.text
        bad_gold = client.post(f"/api/v1/campaigns/{campaign_id}/gold", headers=headers,
                               json={"unit": "conv5:0", "answer": "yes", "category": "flibbertigibbet"})
        assert bad_gold.status_code == 422 and "category" in bad_gold.text
        bad_marks = client.post(f"/api/v1/campaigns/{campaign_id}/gold", headers=headers,
                                json={"unit": "conv5:0", "answer": "yes", "category": "dog", "marked": [0, 3]})
        assert bad_marks.status_code == 422 and "marked" in bad_marks.text
        made = client.post(f"/api/v1/campaigns/{campaign_id}/gold", headers=headers,
                           json={"unit": "conv5:0", "answer": "yes", "category": "dog", "marked": [0, 2]})
        assert made.status_code == 201 and made.json()["category"] == "dog", made.text


def test_a_settled_unit_becomes_gold_and_undo_on_it_says_nothing_of_gold(tmp_path):
    url, campaign_id, units = campaign_with_gold(tmp_path, 3, {}, gold_rate=0.5)
    with session_factory(upgrade_db(url))() as db:
        db.add(UnitSettlement(campaign_id=campaign_id, unit_id=units[0], answer="no"))
        db.commit()
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    with TestClient(create_app(Settings(database_url=url))) as client:
        headers = admin_headers(client)
        made = client.post(f"/api/v1/campaigns/{campaign_id}/gold/settled", headers=headers)
        assert made.status_code == 201 and made.json()["added"] == 1
        client.post("/logout", data={"csrf_token": headers["X-CSRF-Token"]})
        token = login(client, "ann")
        handed = []
        while (unit := next_unit(client, token)) is not None:
            handed.append(unit)
            answer(client, token, unit, "no", url)
            if unit == units[0]:           # the settled gold unit: undo as on any unit
                undone = client.post("/annotations/undo", data={"csrf_token": token}, follow_redirects=False)
                assert undone.status_code == 303, undone.text
                answer(client, token, unit, "no", url)
        assert units[0] in handed
    with session_factory(upgrade_db(url))() as db:
        assert db.scalar(select(GoldUnit.source).where(GoldUnit.unit_id == units[0])) == "settled"
