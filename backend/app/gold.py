"""Crowd quality control in a campaign (issue 36): gold units (answer known) mixed into each annotator's
queue at the campaign's gold rate, at random places (`GoldPlan`), annotators an admin excluded, adaptive
judging, and each annotator's quality. The statistics themselves are pure, in annotation/quality.py and
annotation/consensus.py.

Gold units look like any other unit to annotators (same page, same URLs); they never enter a verdict,
Table 1 or an export's verdicts: their answers only score the annotators."""
from __future__ import annotations

import bisect
import hmac
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from annotation.aggregate import ANSWERS, UnitAnswer, answer_label, answers_needed
from annotation.quality import DoubtHistory, GivenAnswer, GoldAnswer, annotator_quality, gold_from_truth
from backend.app.errors import TaskError
from backend.app.security import server_secret
from backend.db.models import (Annotation, Annotator, Campaign, CampaignExclusion, Category, GoldUnit, ImageMark, Layer,
                               Run, Unit, UnitImage, UnitSettlement, UnitSkip)

GOLD_RATE_MAX = 0.5
# Float slack so that e.g. the blocks of gold rate 0.1 end at answers 10, 20, 30... whatever the rounding.
RATE_TOLERANCE = 1e-9


def check_gold_rate(rate: float) -> float:
    """`rate` as a gold rate; TaskError naming gold_rate outside [0, GOLD_RATE_MAX]."""
    if not isinstance(rate, (int, float)) or math.isnan(rate) or not 0 <= rate <= GOLD_RATE_MAX:
        raise TaskError(f"gold_rate: the gold rate is a share from 0 to {GOLD_RATE_MAX} (e.g. 0.1: one unit in ten), "
                        f"got {rate}.")
    return float(rate)


def gold_unit_ids(campaign_id: int):
    """A select of the campaign's gold units' ids."""
    return select(GoldUnit.unit_id).where(GoldUnit.campaign_id == campaign_id)


def excluded_ids(campaign_id: int):
    """A select of the ids of the annotators excluded from the campaign."""
    return select(CampaignExclusion.annotator_id).where(CampaignExclusion.campaign_id == campaign_id)


def is_excluded(db: Session, campaign_id: int, annotator_id: int) -> bool:
    return db.get(CampaignExclusion, (campaign_id, annotator_id)) is not None


# --- Gold units.

def unit_of_campaign(db: Session, campaign: Campaign, unit: str) -> Unit:
    """The unit "LAYER:INDEX" (e.g. conv5:12) of the campaign's run; TaskError naming `unit` otherwise."""
    layer, _, index = unit.partition(":")
    if not layer or not index.strip().isdigit():
        raise TaskError(f"unit: say which unit as LAYER:INDEX, e.g. {campaign.layer}:12; got {unit!r}.")
    if layer != campaign.layer:
        raise TaskError(f"unit: campaign {campaign.id} labels {campaign.layer}'s units, not {layer}'s.")
    found = db.scalar(select(Unit).join(Layer, Unit.layer_id == Layer.id)
                      .where(Layer.run_id == campaign.run_id, Layer.name == layer, Unit.index == int(index)))
    if found is None:
        raise TaskError(f"unit: run {campaign.run_id}'s {layer} has no unit {index}.")
    if db.scalar(select(func.count()).where(UnitImage.unit_id == found.id)) == 0:
        raise TaskError(f"unit: {unit} has no top images, so nobody is shown it.")
    return found


def _known_category(db: Session, name: str | None) -> Category:
    """An existing category by name or synonym; TaskError naming `category` otherwise (gold never invents one)."""
    wanted = (name or "").strip().lower()
    if not wanted:
        raise TaskError("category: a gold 'yes' names the object's category.")
    category = db.scalar(select(Category).where(func.lower(Category.name) == wanted))
    if category is None:
        category = next((c for c in db.scalars(select(Category).where(Category.synonyms.contains(wanted)))
                         if wanted in (s.strip().lower() for s in c.synonyms.split(";"))), None)
    if category is None:
        raise TaskError(f"category: there is no category {name!r} (gold answers name a known category).")
    return category


def set_gold(db: Session, campaign: Campaign, unit: Unit, answer: str, category: str | None, source: str,
             admin_id: int | None = None, marked: Sequence[int] | None = None) -> GoldUnit:
    """Make `unit` a gold unit of the campaign with this answer (replacing an earlier one), committed."""
    if answer not in ANSWERS:
        raise TaskError(f"answer: a gold answer is one of {', '.join(ANSWERS)}; got {answer!r}.")
    if answer != "yes" and category:
        raise TaskError(f"category: a gold {answer!r} names no category.")
    known = _known_category(db, category) if answer == "yes" else None
    if marked is not None:
        n_images = db.scalar(select(func.count()).where(UnitImage.unit_id == unit.id))
        if answer != "yes" or any(not 0 <= rank < n_images for rank in marked):
            raise TaskError(f"marked: a gold 'yes' may mark image ranks 0..{n_images - 1} of unit {unit.index}; "
                            f"got {sorted(marked)[:10]} for {answer!r}.")
    row = db.scalar(select(GoldUnit).where(GoldUnit.campaign_id == campaign.id, GoldUnit.unit_id == unit.id))
    if row is None:
        row = GoldUnit(campaign_id=campaign.id, unit_id=unit.id)
        db.add(row)
    row.answer, row.category_id, row.source, row.admin_id = answer, known.id if known else None, source, admin_id
    row.marked = sorted(marked) if marked is not None and answer == "yes" else None
    db.commit()
    return row


def gold_from_settlements(db: Session, campaign: Campaign, admin_id: int | None = None) -> int:
    """Every unit an admin settled in the campaign becomes gold (source "settled"), committed; how many."""
    added = 0
    for unit_id, answer, category in db.execute(
            select(UnitSettlement.unit_id, UnitSettlement.answer, Category.name)
            .outerjoin(Category, UnitSettlement.category_id == Category.id)
            .where(UnitSettlement.campaign_id == campaign.id)).all():
        set_gold(db, campaign, db.get(Unit, unit_id), answer, category, "settled", admin_id)
        added += 1
    return added


def run_truth(run: Run) -> list[dict]:
    """The run's automatic labels against the world's truth: RUN_DIR/dissection.json (``ambient dissect
    --truth``, publish records RUN_DIR as `Run.run_dir`); TaskError naming gold_from_truth when it has none."""
    from model.network.run import dissection_file, read_dissection

    if not dissection_file(run.run_dir).exists():
        raise TaskError(f"gold_from_truth: run {run.id} has no dissection.json in {run.run_dir}: run "
                        "`ambient dissect --truth` on it first (only a world's runs have a truth).")
    return read_dissection(run.run_dir)


# Fewest gold units a campaign takes from the truth: enough that an annotator's gold answers are not all the same few.
GOLD_MIN_UNITS = 10


def gold_units_wanted(gold_rate: float, units: int) -> int:
    """Gold units enough for an annotator who labels every other unit to meet a new one at `gold_rate`
    (gold / all answers): rate / (1 - rate) per other unit, at least GOLD_MIN_UNITS, never all of them."""
    return min(units, max(GOLD_MIN_UNITS, math.ceil(gold_rate / (1 - gold_rate) * units)))


def gold_from_run_truth(db: Session, campaign: Campaign) -> int:
    """Gold units from the run's world truth (`run_truth`), chosen by annotation/quality.py's `gold_from_truth`
    (a label of high precision: yes; no category reaching a low one: no); committed; how many."""
    units = dict(db.execute(select(Unit.index, Unit.id).join(Layer, Unit.layer_id == Layer.id)
                            .where(Layer.run_id == campaign.run_id, Layer.name == campaign.layer)).all())
    with_images = set(db.scalars(select(UnitImage.unit_id).where(UnitImage.unit_id.in_(units.values()))))
    # Only the layer's units that have images to show can be asked about.
    rows = [row for row in run_truth(campaign.run) if row.get("layer", campaign.layer) == campaign.layer
            and units.get(int(row["unit"])) in with_images]
    added = 0
    for index, gold in gold_from_truth(rows, limit=gold_units_wanted(campaign.gold_rate, len(with_images))).items():
        answer, _, category = gold.label.partition(":")
        try:
            set_gold(db, campaign, db.get(Unit, units[index]), answer, category or None, "truth")
        except TaskError:      # a truth category the database does not know: leave that unit to people
            db.rollback()
            continue
        added += 1
    return added


def gold_answers(db: Session, campaign_id: int) -> dict[int, GoldAnswer]:
    """unit id -> its known answer, as annotation/quality.py scores it."""
    return {unit_id: GoldAnswer(answer_label(answer, category),
                                frozenset(marked) if marked is not None else None)
            for unit_id, answer, category, marked in db.execute(
                select(GoldUnit.unit_id, GoldUnit.answer, Category.name, GoldUnit.marked)
                .outerjoin(Category, GoldUnit.category_id == Category.id).where(GoldUnit.campaign_id == campaign_id))}


def answered_gold(db: Session, campaign_id: int) -> list[tuple[str, dict[str, str]]]:
    """Each answered gold unit's known label and {annotator: label} of the annotators not excluded: what anchors
    the Dawid-Skene consensus (annotation/consensus.py's `consensus_estimate`)."""
    known = gold_answers(db, campaign_id)
    given: dict[int, dict[str, str]] = {}
    for unit_id, name, answer, category in db.execute(
            select(Annotation.unit_id, Annotator.name, Annotation.answer, Category.name)
            .join(Annotator, Annotation.annotator_id == Annotator.id)
            .outerjoin(Category, Annotation.category_id == Category.id)
            .where(Annotation.campaign_id == campaign_id, Annotation.unit_id.in_(gold_unit_ids(campaign_id)),
                   Annotation.annotator_id.not_in(excluded_ids(campaign_id))).order_by(Annotation.id)):
        if answer == "yes" and category is None:      # a yes whose category was deleted says nothing now
            continue
        given.setdefault(unit_id, {})[name] = answer_label(answer, category)
    return [(known[unit].label, labels) for unit, labels in sorted(given.items()) if unit in known]


# The ServerSecret that keys where gold units fall in each queue (backend/app/security.py's `server_secret`).
GOLD_KEY = "gold_key"


@dataclass(frozen=True)
class GoldPlan:
    """Where gold units fall among one annotator's answers in a campaign: one at a random position within each
    block of 1/rate answers (the k-th block holds answers n with k < rate * n <= k + 1), so that nobody can count
    their way to the next gold unit, yet the gold answers stay within one of `rate` times the answers at every
    point (were each answer gold with probability `rate`, long stretches could go without). The positions come from
    a generator seeded by the server's secret key, the campaign and the annotator: the same for them every
    time, different between annotators, and not computable from this code and the ids alone."""

    rate: float
    seed: bytes

    @classmethod
    def of(cls, db: Session, campaign: Campaign, annotator_id: int) -> GoldPlan:
        key = server_secret(db, GOLD_KEY).encode()
        return cls(campaign.gold_rate, hmac.digest(key, f"{campaign.id}:{annotator_id}".encode(), "sha256"))

    def positions(self, up_to: int) -> list[int]:
        """The answer numbers (1 for the first answer) at which a gold unit is due, up to `up_to`."""
        if self.rate <= 0:
            return []
        rng, found, block = random.Random(self.seed), [], 0
        while (first := math.floor(block / self.rate + RATE_TOLERANCE) + 1) <= up_to:
            last = math.floor((block + 1) / self.rate + RATE_TOLERANCE)
            found.append(rng.randint(first, last))      # drawn block by block: the same whatever `up_to`
            block += 1
        return [n for n in found if n <= up_to]

    def pick(self, units: list[int], answered: int) -> int:
        """One of `units` for the annotator's next answer (after `answered`), drawn from the plan's seed: a rerun
        of the same answers picks the same."""
        return random.Random(self.seed + answered.to_bytes(8, "big")).choice(units)

    def due(self, answered: int, on_gold: int) -> bool:
        """Whether the next answer should be on a gold unit: fewer gold units met (answered or skipped) than
        positions so far, counting it (a gold unit that could not be handed at its position, none being left
        unseen, comes at the next)."""
        return on_gold < len(self.positions(answered + 1))


def _answered(db: Session, campaign: Campaign, annotator_id: int) -> tuple[int, int]:
    """How many answers the annotator gave in the campaign, and how many gold units they met there: answered or
    skipped. A skipped gold unit spends its place in the plan: were the next unit gold again, skipping would tell
    a gold unit from the others."""
    answered = db.scalar(select(func.count()).where(Annotation.campaign_id == campaign.id,
                                                     Annotation.annotator_id == annotator_id))
    met = (select(Annotation.unit_id).where(Annotation.campaign_id == campaign.id,
                                            Annotation.annotator_id == annotator_id)
           .union(select(UnitSkip.unit_id).where(UnitSkip.campaign_id == campaign.id,
                                                 UnitSkip.annotator_id == annotator_id))).subquery()
    on_gold = db.scalar(select(func.count()).select_from(met).where(met.c.unit_id.in_(gold_unit_ids(campaign.id))))
    return answered, on_gold


def gold_due(db: Session, campaign: Campaign, annotator_id: int) -> bool:
    """Whether the annotator's next unit should be gold."""
    return (campaign.gold_rate > 0
            and GoldPlan.of(db, campaign, annotator_id).due(*_answered(db, campaign, annotator_id)))


def future_gold(db: Session, campaign: Campaign, annotator_id: int, regular_left: int) -> int:
    """How many gold units the queue would mix in while it hands the annotator `regular_left` other units."""
    if campaign.gold_rate <= 0 or regular_left == 0:
        return 0
    answered, on_gold = _answered(db, campaign, annotator_id)
    unseen, coming = len(unseen_gold(db, campaign, annotator_id)), 0
    positions = GoldPlan.of(db, campaign, annotator_id).positions(answered + regular_left + unseen)
    while regular_left > 0:           # the queue's own steps: gold when due and one is left, else a unit
        if unseen > coming and on_gold + coming < bisect.bisect_right(positions, answered + 1):
            coming += 1
        else:
            regular_left -= 1
        answered += 1
    return coming


def unseen_gold(db: Session, campaign: Campaign, annotator_id: int) -> list[int]:
    """The campaign's gold units this annotator has neither answered nor skipped there (each at most once)."""
    seen = (select(Annotation.unit_id).where(Annotation.campaign_id == campaign.id,
                                             Annotation.annotator_id == annotator_id)
            .union(select(UnitSkip.unit_id).where(UnitSkip.campaign_id == campaign.id,
                                                  UnitSkip.annotator_id == annotator_id)))
    return list(db.scalars(gold_unit_ids(campaign.id).where(GoldUnit.unit_id.not_in(seen)).order_by(GoldUnit.unit_id)))


def next_gold(db: Session, campaign: Campaign, annotator_id: int) -> int | None:
    """The gold unit to hand the annotator now, one they have not seen (None when they have seen every one):
    at random, so annotators do not all meet the same one at the same point (`GoldPlan.pick`)."""
    unseen = unseen_gold(db, campaign, annotator_id)
    if not unseen:
        return None
    answered, _on_gold = _answered(db, campaign, annotator_id)
    return GoldPlan.of(db, campaign, annotator_id).pick(unseen, answered)


# --- Excluding an annotator.

def _annotator(db: Session, name: str) -> Annotator:
    person = db.scalar(select(Annotator).where(Annotator.name == name))
    if person is None:
        raise TaskError(f"name: no account is called {name!r}.", 404)
    return person


def exclude_annotator(db: Session, campaign: Campaign, name: str, admin_id: int | None = None) -> Annotator:
    """Take `name` out of the campaign, committed: their answers leave every verdict (the units go back to the
    queue for someone else), their holds there are released; nothing is deleted. TaskError when a unit
    would be left with no annotator at all (only theirs)."""
    person = _annotator(db, name)
    if is_excluded(db, campaign.id, person.id):
        raise TaskError(f"name: {name} is already excluded from campaign {campaign.id}.", 409)
    others = (select(Annotation.unit_id).where(Annotation.campaign_id == campaign.id,
                                               Annotation.annotator_id != person.id,
                                               Annotation.annotator_id.not_in(excluded_ids(campaign.id))))
    alone = db.execute(select(Layer.name, Unit.index).join(Unit, Unit.layer_id == Layer.id)
                       .join(Annotation, Annotation.unit_id == Unit.id)
                       .where(Annotation.campaign_id == campaign.id, Annotation.annotator_id == person.id,
                              Annotation.unit_id.not_in(gold_unit_ids(campaign.id)), Annotation.unit_id.not_in(others))
                       .order_by(Unit.index).limit(5)).all()
    if alone:
        units = ", ".join(f"{layer}:{index}" for layer, index in alone)
        raise TaskError(f"name: {name} is the last annotator of unit(s) {units} in campaign {campaign.id}: "
                        "excluding them would leave those units with no answer. Let others judge them first.", 409)
    from backend.db.models import UnitReservation   # the queue's holds: released at once

    db.add(CampaignExclusion(campaign_id=campaign.id, annotator_id=person.id, admin_id=admin_id))
    db.execute(delete(UnitReservation).where(UnitReservation.campaign_id == campaign.id,
                                             UnitReservation.annotator_id == person.id))
    db.commit()
    return person


def include_annotator(db: Session, campaign: Campaign, name: str) -> Annotator:
    """Take `name` back into the campaign, committed: their answers count again."""
    person = _annotator(db, name)
    row = db.get(CampaignExclusion, (campaign.id, person.id))
    if row is None:
        raise TaskError(f"name: {name} is not excluded from campaign {campaign.id}.", 409)
    db.delete(row)
    db.commit()
    return person


def excluded_names(db: Session, campaign_id: int) -> list[str]:
    return list(db.scalars(select(Annotator.name).where(Annotator.id.in_(excluded_ids(campaign_id)))
                           .order_by(Annotator.name)))


# --- Adaptive judging.

def doubt_history(db: Session, campaign_id: int) -> DoubtHistory:
    """When each annotator of the campaign was doubtful on gold (annotation/quality.py's `is_doubtful`: under
    DOUBTFUL_GOLD_ACCURACY with DOUBTFUL_MIN_WRONG gold answers wrong), answer by answer. Not their latest gold
    answer alone: one slip should not cost a third judge on every unit they judge until the next."""
    gold = gold_answers(db, campaign_id)
    if not gold:
        return DoubtHistory(())
    return DoubtHistory(
        (name, annotation_id, answer_label(answer, category) == gold[unit_id].label)
        for annotation_id, name, unit_id, answer, category in db.execute(
            select(Annotation.id, Annotator.name, Annotation.unit_id, Annotation.answer, Category.name)
            .join(Annotator, Annotation.annotator_id == Annotator.id)
            .outerjoin(Category, Annotation.category_id == Category.id)
            .where(Annotation.campaign_id == campaign_id, Annotation.unit_id.in_(list(gold)))))


@dataclass(frozen=True)
class Judging:
    """How many answers a unit of a campaign needs: its judges, or, adaptive, two unless they disagree or
    one of them was doubtful on gold when the second answered (annotation/aggregate.py's `answers_needed`)."""

    judges: int
    adaptive: bool = False
    doubt: DoubtHistory | None = None

    def doubtful(self, answers: Sequence[UnitAnswer]) -> bool:
        """Whether one of the first two judges was doubtful when the second of them answered. Decided then, so a
        unit two agreeing judges closed stays closed whatever their later gold answers (an admin who comes to
        distrust someone excludes them, which sends their units back to the queue)."""
        if self.doubt is None or len(answers) < 2:
            return False
        return any(self.doubt.doubtful(a.annotator, before=answers[1].sequence) for a in answers[:2])

    def needed(self, answers: Sequence[UnitAnswer]) -> int:
        return answers_needed([a.label for a in answers], self.judges, self.adaptive, self.doubtful(answers))


def judging(db: Session, campaign: Campaign | None, judges: int) -> Judging:
    if campaign is None:
        return Judging(judges)
    return Judging(campaign.judges, campaign.adaptive, doubt_history(db, campaign.id) if campaign.adaptive else None)


# --- Each annotator's quality.

def given_answers(db: Session, campaign_id: int) -> list[GivenAnswer]:
    """Every answer in the campaign, gold included, excluded annotators' too, as quality control sees them."""
    marks: dict[int, set[int]] = {}
    for annotation_id, rank in db.execute(
            select(ImageMark.annotation_id, UnitImage.rank).join(UnitImage, ImageMark.unit_image_id == UnitImage.id)
            .join(Annotation, ImageMark.annotation_id == Annotation.id).where(Annotation.campaign_id == campaign_id)):
        marks.setdefault(annotation_id, set()).add(rank)
    return [GivenAnswer(name, unit_id, answer_label(answer, category),
                        frozenset(marks.get(annotation_id, ())), seconds)
            for annotation_id, name, unit_id, answer, category, seconds in db.execute(
                select(Annotation.id, Annotator.name, Annotation.unit_id, Annotation.answer, Category.name,
                       Annotation.seconds)
                .join(Annotator, Annotation.annotator_id == Annotator.id)
                .outerjoin(Category, Annotation.category_id == Category.id)
                .where(Annotation.campaign_id == campaign_id).order_by(Annotation.id))]


def skips_by_name(db: Session, campaign_id: int) -> dict[str, int]:
    return dict(db.execute(select(Annotator.name, func.count()).join(UnitSkip, UnitSkip.annotator_id == Annotator.id)
                           .where(UnitSkip.campaign_id == campaign_id).group_by(Annotator.name)).all())


def seconds_between(handed_at: datetime | None, answered_at: datetime) -> float | None:
    """Seconds from a unit handed out to its answer (None when the hold predates the record)."""
    if handed_at is None:
        return None
    if handed_at.tzinfo is None:
        handed_at = handed_at.replace(tzinfo=answered_at.tzinfo)
    return max((answered_at - handed_at) / timedelta(seconds=1), 0.0)


def campaign_quality(db: Session, campaign: Campaign, consensus: dict[int, str]) -> list[dict]:
    """One row per annotator of the campaign (annotation/quality.py's figures) and whether they are excluded.
    `consensus`: the non-gold units' consensus labels."""
    excluded = set(excluded_names(db, campaign.id))
    rows = annotator_quality(given_answers(db, campaign.id), gold_answers(db, campaign.id), consensus,
                             skips_by_name(db, campaign.id))
    return [{**row.as_dict(), "excluded": row.name in excluded} for row in rows]
