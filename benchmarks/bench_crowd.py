"""A simulated crowd, measured (issue 36, item 5): bots annotate a run whose world truth is known through the
HTTP API, like people (log in, ask the queue for a unit, answer it), and the campaign's quality control is read
back through the API.

Each unit's true answer comes from `ambient dissect --truth` (RUN_DIR/dissection.json): "yes, <category>" where
the truth's precision reaches DETECTOR_PRECISION, else "no". The bots: diligent ones right DILIGENT of the time,
careless ones CARELESS, spammers answering at random or always "yes, person". A "yes" marks every top image.
For each share of spammers, fixed judging (three judges) and adaptive judging (two, a third on disagreement or when
one of them is doubtful on gold), at a gold rate of GOLD_RATE with gold from the truth:

- detectors by the plain majority, by the app's Dawid-Skene (its prior and the gold units anchor each annotator's
  confusion: "dawid-skene + gold"), and by the same after excluding every bot whose gold accuracy is below
  GOLD_CUT and re-judging their units ("... + exclusions"), against the truth's count;
- each consensus's accuracy: the share of units whose verdict equals the truth;
- gold accuracy per bot kind (median), and judgments per unit.

The runs are built beforehand (a world of known truth, e.g. `ambient world W --preset tiny --videos 12 --seed S`,
ingest, labels, train, `units --no-publish`, `dissect --truth --no-publish`); each is published into a fresh
SQLite database here. Everything runs in this process (FastAPI's TestClient speaks HTTP to the app in memory).

    .venv/bin/python benchmarks/bench_crowd.py RUN_DIR [RUN_DIR ...] [--bots 10] [--spammers 0 0.2 0.4] [--seed 0]
"""
from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from argon2 import PasswordHasher  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

DILIGENT, CARELESS = 0.95, 0.65
GOLD_RATE = 0.1
GOLD_KEPT = 0.1          # share of the units kept as gold (of those the truth makes sure)
GOLD_CUT = 0.5            # bots below this gold accuracy are excluded for "... + exclusions"
PASSWORD = "correct horse battery"
# The consensus methods as the report names them: the app's Dawid-Skene is anchored on the campaign's gold units.
NAMES = {"majority": "majority", "dawid-skene": "dawid-skene + gold"}
EXCLUDED = "dawid-skene + gold + exclusions"


def truth_labels(run_dir: Path, layer: str) -> dict[int, str]:
    """unit index -> its true label: "yes:<category>" for a unit the truth makes a detector, else "no"."""
    from model.network.run import read_dissection
    from model.settings import DETECTOR_PRECISION

    return {int(row["unit"]): (f"yes:{row['category']}" if row.get("category") and
                               float(row["precision"]) >= DETECTOR_PRECISION else "no")
            for row in read_dissection(run_dir) if row.get("layer", layer) == layer}


def bot_kinds(bots: int, spammers: float) -> list[str]:
    """The crowd: `spammers` of it spammers (half random, half always "yes, person"), the rest 3 diligent to 1
    careless."""
    n_spam = round(bots * spammers)
    n_careless = (bots - n_spam) // 4
    return (["random"] * ((n_spam + 1) // 2) + ["yes-person"] * (n_spam // 2) + ["careless"] * n_careless
            + ["diligent"] * (bots - n_spam - n_careless))


def bot_answer(kind: str, truth: str, categories: list[str], rng: random.Random) -> str:
    if kind == "yes-person":
        return "yes:person"
    if kind == "random":
        return rng.choice(["no", "texture", *(f"yes:{c}" for c in categories)])
    if rng.random() < (DILIGENT if kind == "diligent" else CARELESS):
        return truth
    wrong = [label for label in ["no", "texture", *(f"yes:{c}" for c in categories)] if label != truth]
    return rng.choice(wrong)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client: TestClient, name: str) -> str:
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/login").text)


def published_database(run_dir: Path, folder: Path) -> Path:
    """The run published into a fresh SQLite file (copied for each scenario)."""
    from backend.db.session import upgrade_db
    from backend.publish import publish_run

    path = folder / "published.db"
    engine = upgrade_db(f"sqlite:///{path}")
    publish_run(run_dir, engine, roots=[run_dir.parent, *run_dir.parents])
    engine.dispose()
    return path


def accuracies(url: str, campaign_id: int, truth: dict[int, str], methods: tuple[str, ...]) -> dict[str, float | None]:
    """Per consensus, the share of the campaign's decided units whose verdict equals the truth."""
    from backend.app.results import run_report, verdict_label
    from backend.db.models import Campaign
    from backend.db.session import session_factory, upgrade_db

    shares = {}
    with session_factory(upgrade_db(url))() as db:
        campaign = db.get(Campaign, campaign_id)
        for method in methods:
            judged = [v for v in run_report(db, campaign.run, campaign, method).verdicts if v.unit in truth]
            shares[method] = round(sum(verdict_label(v) == truth[v.unit] for v in judged) / len(judged), 3) if judged else None
    return shares


def by_layer(db, run) -> dict[int, int]:
    """conv5's unit index -> unit id."""
    from backend.db.models import Layer, Unit

    return dict(db.execute(select(Unit.index, Unit.id).join(Layer, Unit.layer_id == Layer.id)
                           .where(Layer.run_id == run.id, Layer.name == "conv5")).all())


def scenario(template: Path, folder: Path, run_dir: Path, kinds: list[str], adaptive: bool, seed: int) -> dict:
    """One crowd on one campaign: the bots answer till the queue is empty; the API's figures."""
    from backend.app import create_app
    from backend.app.campaign import CampaignFields, create_campaign
    from backend.app.gold import GOLD_KEY, gold_from_run_truth
    from backend.config import Settings
    from backend.db.models import Annotator, Category, GoldUnit, Run, ServerSecret, UnitImage
    from backend.db.session import session_factory, upgrade_db

    path = folder / f"crowd_{'adaptive' if adaptive else 'fixed'}_{len(kinds)}_{kinds.count('random')}.db"
    shutil.copyfile(template, path)
    url = f"sqlite:///{path}"
    password = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    names = [f"{kind}{i}" for i, kind in enumerate(kinds)]
    with session_factory(upgrade_db(url))() as db:
        run = db.scalar(select(Run))
        campaign = create_campaign(db, CampaignFields(name="crowd", run_id=run.id, layer="conv5", judges=3, open=True,
                                                      gold_rate=GOLD_RATE, adaptive=adaptive))
        campaign_id = campaign.id
        gold_from_run_truth(db, campaign)
        # A lab keeps a sample of the truth's sure units as gold (GOLD_KEPT of the units): the rest are the crowd's.
        rows = list(db.scalars(select(GoldUnit).where(GoldUnit.campaign_id == campaign_id).order_by(GoldUnit.unit_id)))
        keep = set(random.Random(seed).sample(range(len(rows)), min(len(rows), round(GOLD_KEPT * len(by_layer(db, run))))))
        for i, row in enumerate(rows):
            if i not in keep:
                db.delete(row)
        db.commit()
        gold_units = {row.unit_id for i, row in enumerate(rows) if i in keep}
        gold = len(gold_units)
        for name in [*names, "boss"]:
            db.add(Annotator(name=name, is_admin=name == "boss", password_hash=password))
        # Where gold falls in each queue is keyed by a server secret (backend/app/gold.py's GoldPlan): fixed by the
        # seed here, so that a rerun gives the same figures.
        db.add(ServerSecret(name=GOLD_KEY, value=f"bench_crowd seed {seed}"))
        db.commit()
        by_index = by_layer(db, run)
        images = {}
        for unit_id, image_id in db.execute(select(UnitImage.unit_id, UnitImage.id).order_by(UnitImage.rank)):
            images.setdefault(unit_id, []).append(image_id)
        known = set(db.scalars(select(Category.name)))
    world = {by_index[i]: label for i, label in truth_labels(run_dir, "conv5").items() if by_index.get(i) in images}
    world = {u: (label if label == "no" or label[4:] in known else "no") for u, label in world.items()}
    # Gold units count in no verdict: the truth the verdicts are matched against is the other units'.
    truth = {u: label for u, label in world.items() if u not in gold_units}
    categories = sorted({label[4:] for label in world.values() if label.startswith("yes:")} | {"person"})
    rng = random.Random(seed)
    started = time.perf_counter()
    with TestClient(create_app(Settings(database_url=url))) as base:
        clients = []
        for name in names:
            client = TestClient(base.app)
            clients.append((name, client, log_in(client, name)))

        def crowd(bots) -> int:
            """The bots answer till the queue has nothing left for any of them; how many answers they gave."""
            given, active = 0, list(bots)
            while active:               # round robin: each bot one unit at a time, as people would interleave
                for entry in list(active):
                    name, client, token = entry
                    handed = client.post("/annotate", data={"csrf_token": token}, follow_redirects=False)
                    if handed.status_code != 303:
                        active.remove(entry)
                        continue
                    unit = int(handed.headers["location"].rsplit("/", 1)[1])
                    label = bot_answer(re.sub(r"\d+$", "", name), world[unit], categories, rng)
                    kind, _, category = label.partition(":")
                    response = client.post(f"/units/{unit}/annotation", data={
                        "answer": kind, "category": category, "csrf_token": token,
                        "marked": [str(i) for i in images[unit]] if kind == "yes" else []})
                    assert response.status_code == 200, response.text
                    given += 1
            return given

        answers = crowd(clients)
        seconds = time.perf_counter() - started
        admin = TestClient(base.app)
        headers = {"X-CSRF-Token": log_in(admin, "boss")}
        quality = admin.get(f"/api/v1/campaigns/{campaign_id}/annotators?consensus=dawid-skene", headers=headers).json()
        detectors = {NAMES[method]: admin.get(f"/api/v1/campaigns/{campaign_id}/table1?consensus={method}",
                                              headers=headers).json()["detectors"] for method in NAMES}
        accuracy = {NAMES[method]: share for method, share in accuracies(url, campaign_id, truth, tuple(NAMES)).items()}
        refused, excluded = 0, set()
        for row in quality["items"]:
            if row["gold_accuracy"] is not None and row["gold_accuracy"] < GOLD_CUT:
                made = admin.post(f"/api/v1/campaigns/{campaign_id}/exclusions", headers=headers,
                                  json={"name": row["name"]}).status_code == 201
                refused += not made
                excluded |= {row["name"]} if made else set()
        # The excluded bots' units went back to the queue: the others judge them again.
        extra = crowd([entry for entry in clients if entry[0] not in excluded])
        after = admin.get(f"/api/v1/campaigns/{campaign_id}/annotators?consensus=dawid-skene", headers=headers).json()
        detectors[EXCLUDED] = admin.get(f"/api/v1/campaigns/{campaign_id}/table1?consensus=dawid-skene",
                                        headers=headers).json()["detectors"]
    accuracy[EXCLUDED] = accuracies(url, campaign_id, truth, ("dawid-skene",))["dawid-skene"]
    gold_by_kind = {}
    for row in quality["items"]:
        gold_by_kind.setdefault(re.sub(r"\d+$", "", row["name"]), []).append(row["gold_accuracy"])
    return {"adaptive": adaptive, "spammers": sum(k in ("random", "yes-person") for k in kinds) / len(kinds),
            "units": len(truth), "gold_units": gold, "truth_detectors": sum(l != "no" for l in truth.values()),
            "detectors": detectors, "accuracy": accuracy, "excluded": sorted(excluded),
            "exclusions_refused": refused, "answers_after_exclusion": extra,
            "judgments_per_unit": quality["judgments_per_unit"],
            "judgments_per_unit_after_exclusion": after["judgments_per_unit"], "answers": answers, "seconds": round(seconds, 1),
            "gold_accuracy": {kind: statistics.median([v for v in values if v is not None])
                              if any(v is not None for v in values) else None
                              for kind, values in sorted(gold_by_kind.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with dissection.json (dissect --truth)")
    parser.add_argument("--bots", type=int, default=10)
    parser.add_argument("--spammers", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for run_dir in args.runs:
        with tempfile.TemporaryDirectory() as folder:
            template = published_database(run_dir.resolve(), Path(folder))
            for share in args.spammers:
                for adaptive in (False, True):
                    row = scenario(template, Path(folder), run_dir.resolve(), bot_kinds(args.bots, share), adaptive,
                                   args.seed)
                    print(run_dir.name, row, flush=True)


if __name__ == "__main__":
    main()
