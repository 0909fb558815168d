"""A run's annotations in one of its campaigns, loaded from the database and handed to `annotation/` for the
statistics."""
from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Sequence

from sqlalchemy import case, func, select, union
from sqlalchemy.orm import Session, aliased

from annotation.aggregate import (PRECISION_TOLERANCE, Settlement, UnitAnswer, UnitVerdict, aggregate_unit,
                                  answer_label, units_for_review)
from annotation.statistics import (AgreementSummary, ClipJudgement, LabelAgreement, Table1, agreement_summary,
                                   automatic_agreement, detector_histogram, detectors_by_threshold, table1)
from annotation.consensus import CONSENSUS_METHODS, Alpha, consensus_estimate, krippendorff_alpha, label_as_settlement
from backend.app.errors import TaskError
from backend.app.campaign import campaign_annotation_settings, default_campaign
from backend.app.gold import Judging, answered_gold, excluded_ids, gold_unit_ids, judging
from backend.db.models import (Annotation, Annotator, Campaign, Category, ImageMark, Layer, Run, SoundJudgement, Unit,
                               UnitImage, UnitSettlement)
from model.settings import ANNOTATION, DETECTOR_PRECISION, AnnotationSettings

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 21))   # Fig. A1b's x axis: 5% .. 100%
GALLERY_IMAGES = 5                                              # Fig. 4 shows each detector's top 5


@dataclass(frozen=True)
class UnitRow:
    """One unit of a run as the results pages show it."""

    unit_id: int
    layer: str
    index: int
    answers: tuple[UnitAnswer, ...]
    verdict: UnitVerdict | None          # None until the unit has all its annotators (or a settlement)
    auto_category: str | None
    auto_precision: float | None
    top_image_ids: tuple[int, ...]       # the first GALLERY_IMAGES, best first
    auto_iou: float | None = None
    auto_netdissect_category: str | None = None     # Network Dissection's label (``ambient dissect --masks``)
    auto_netdissect_iou: float | None = None

    @property
    def human_label(self) -> str | None:
        """The people's detector label: the verdict's category when it is a detector."""
        return self.verdict.category if self.verdict is not None and self.verdict.is_detector else None

    @property
    def label_agreement(self) -> str:
        """Which of the human, paper-score and Network Dissection labels coincide ("—": fewer than two labels)."""
        labels = {"human": self.human_label, "paper": self.auto_category, "ND": self.auto_netdissect_category}
        given = {name: label for name, label in labels.items() if label is not None}
        if len(given) < 2:
            return "—"
        groups = [" = ".join(name for name in given if given[name] == label) for label in dict.fromkeys(given.values())]
        agreeing = [group for group in groups if " = " in group]
        return ", ".join(agreeing) if agreeing else "none"


def automatic_label_rows(rows: Sequence[UnitRow], category: str | None = None, min_precision: float = 0.0,
                         min_iou: float = 0.0) -> list[UnitRow]:
    """The units with an automatic label, most precise first, filtered: ``category`` is either automatic
    label; the paper's precision and Network Dissection's IoU (else the paper label's IoU) reach the minimums."""
    def iou(row: UnitRow) -> float:
        return row.auto_netdissect_iou if row.auto_netdissect_iou is not None else (row.auto_iou or 0.0)
    labelled = [r for r in rows if r.auto_category is not None or r.auto_netdissect_category is not None]
    return sorted((r for r in labelled
                   if (category is None or category in (r.auto_category, r.auto_netdissect_category))
                   and (r.auto_precision or 0.0) >= min_precision - PRECISION_TOLERANCE and iou(r) >= min_iou),
                  key=lambda r: (-(r.auto_precision or 0.0), -iou(r), r.layer, r.index))


@dataclass(frozen=True)
class AutomaticDetectors:
    """The units whose automatic (truth-based) label makes them detectors, before anyone annotates."""

    threshold: float
    labelled_units: int                  # units with any automatic category
    detectors: list[UnitRow]             # automatic precision >= threshold, most precise first
    characteristic: int                  # of `detectors`, how many have a characteristic-sound category
    silent: int
    histogram: dict[str, int]            # category -> automatic detectors, most common first (ties by name)


def _auto_detector(row: UnitRow, threshold: float) -> bool:
    # Same tolerance as aggregate_unit, so a precision of exactly the threshold counts whatever the rounding.
    return (row.auto_precision or 0.0) >= threshold - PRECISION_TOLERANCE


def automatic_detectors(rows: list[UnitRow], characteristic: dict[str, bool],
                        threshold: float) -> AutomaticDetectors | None:
    """Summarise the automatic labels of `rows`; None when no unit has one."""
    labelled = [r for r in rows if r.auto_category is not None]
    if not labelled:
        return None
    detectors = sorted((r for r in labelled if _auto_detector(r, threshold)),
                       key=lambda r: (-(r.auto_precision or 0.0), r.layer, r.index))
    n_characteristic = sum(characteristic.get(r.auto_category, False) for r in detectors)
    counts = Counter(r.auto_category for r in detectors)
    return AutomaticDetectors(threshold=threshold, labelled_units=len(labelled), detectors=detectors,
                              characteristic=n_characteristic, silent=len(detectors) - n_characteristic,
                              histogram=dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))))


RUN_NAME_MAX = 200


def rename_run(db: Session, run_id: int, name: str) -> Run:
    """Give the run a new name (spaces collapsed), committed; returns it."""
    run = db.get(Run, run_id)
    if run is None:
        raise TaskError(f"There is no run {run_id}.", 404)
    name = " ".join(name.split())
    if not name or len(name) > RUN_NAME_MAX:
        raise TaskError(f"A run's name is 1-{RUN_NAME_MAX} characters: say what it is (network, labels, data, when).")
    run.name = name
    db.commit()
    return run


@dataclass(frozen=True)
class HeldOut:
    """How well the network predicts the sound labels of held-out frames, at its last evaluation."""

    accuracy: float
    chance: float | None          # 1 / k for clusters, 0.5 per bit for codes
    majority: float | None        # always answering the commonest training label
    epoch: int | None

    @property
    def times_majority(self) -> float | None:
        return self.accuracy / self.majority if self.majority else None


def held_out(run: Run) -> HeldOut | None:
    """The run's held-out accuracy from its training metrics; None for a network not trained here."""
    metrics = run.metrics or {}
    if metrics.get("test_accuracy") is None:
        return None
    return HeldOut(metrics["test_accuracy"], metrics.get("chance"), metrics.get("majority"), metrics.get("epoch"))


@dataclass(frozen=True)
class RunReport:
    run: Run
    campaign: Campaign | None            # whose answers these are; None: the run is in no campaign yet
    units: list[UnitRow]
    verdicts: list[UnitVerdict]
    characteristic: dict[str, bool]
    table1: Table1
    histogram: dict[str, int]
    threshold_counts: list[int]
    agreement: AgreementSummary | None
    automatic: LabelAgreement
    automatic_labels: dict[int, str | None]   # unit id -> automatic detector label (None: not a detector)
    review: list[UnitRow]
    complete_units: int
    auto_detectors: AutomaticDetectors | None   # None when no unit of the run has an automatic label
    consensus: str = "majority"          # how each unit's answer and object were chosen (CONSENSUS_METHODS)
    alpha: Alpha | None = None           # Krippendorff's alpha over the complete units, with its bootstrap interval
    judgments_per_unit: float | None = None   # mean counted answers per complete unit (settled ones aside)

    @property
    def detectors(self) -> list[UnitRow]:
        return [u for u in self.units if u.verdict is not None and u.verdict.is_detector]


def characteristic_flags(db: Session) -> dict[str, bool]:
    return dict(db.execute(select(Category.name, Category.characteristic_sound)).all())


def unit_answers(db: Session, unit_ids, campaign_id: int | None) -> dict[int, list[UnitAnswer]]:
    """The annotators' answers of each unit in the campaign (marks as image ranks), oldest first (none
    for no campaign: every answer has one): the answers that count, so neither a gold unit's (they only
    score people: backend/app/gold.py) nor those of an annotator excluded from the campaign."""
    counted = (Annotation.campaign_id == campaign_id, Annotation.unit_id.in_(unit_ids),
               Annotation.unit_id.not_in(gold_unit_ids(campaign_id)),
               Annotation.annotator_id.not_in(excluded_ids(campaign_id)))
    marks: dict[int, set[int]] = defaultdict(set)
    for annotation_id, rank in db.execute(
            select(ImageMark.annotation_id, UnitImage.rank).join(UnitImage, ImageMark.unit_image_id == UnitImage.id)
            .join(Annotation, ImageMark.annotation_id == Annotation.id)
            .where(*counted)):
        marks[annotation_id].add(rank)
    answers: dict[int, list[UnitAnswer]] = defaultdict(list)
    for annotation_id, unit_id, annotator, answer, category in db.execute(
            select(Annotation.id, Annotation.unit_id, Annotator.name, Annotation.answer, Category.name)
            .join(Annotator, Annotation.annotator_id == Annotator.id)
            .outerjoin(Category, Annotation.category_id == Category.id)
            .where(*counted).order_by(Annotation.id)):
        try:
            answers[unit_id].append(UnitAnswer(annotator, answer, category if answer == "yes" else None,
                                               frozenset(marks[annotation_id]) if answer == "yes" else frozenset(),
                                               sequence=annotation_id))
        except ValueError:   # a yes whose category was deleted: nothing left to count
            continue
    return answers


def unit_settlements(db: Session, unit_ids, campaign_id: int | None) -> dict[int, Settlement]:
    """The admins' settlements of these units in the campaign (one whose yes-category was deleted counts as none)."""
    settlements = {}
    for unit_id, answer, category in db.execute(
            select(UnitSettlement.unit_id, UnitSettlement.answer, Category.name)
            .outerjoin(Category, UnitSettlement.category_id == Category.id)
            .where(UnitSettlement.campaign_id == campaign_id, UnitSettlement.unit_id.in_(unit_ids))):
        try:
            settlements[unit_id] = Settlement(answer, category if answer == "yes" else None)
        except ValueError:
            continue
    return settlements


def _verdict(unit_id: int, answers: Sequence[UnitAnswer], settlement: Settlement | None, n_images: int,
             rule: Judging, consensus: Settlement | None = None) -> UnitVerdict | None:
    """The unit's verdict once it has all the answers `rule` asks (or a settlement); None before.
    `consensus`: a model's answer and object (Dawid-Skene) in place of the plurality."""
    if len(answers) < rule.needed(answers) and settlement is None:
        return None
    return aggregate_unit(unit_id, answers, n_images=max(n_images, 1), threshold=DETECTOR_PRECISION,
                          settlement=settlement, consensus=consensus)


def annotators_verdict(db: Session, unit_id: int, campaign: Campaign) -> UnitVerdict | None:
    """The unit's verdict in the campaign from its annotators' votes alone (any settlement left aside); None
    before it has all of them."""
    n_images = db.scalar(select(func.count()).where(UnitImage.unit_id == unit_id))
    return _verdict(unit_id, unit_answers(db, [unit_id], campaign.id).get(unit_id, ()), None, n_images,
                    judging(db, campaign, campaign.judges))


def detector_units(db: Session, unit_ids, campaign: Campaign) -> dict[int, str]:
    """Which of `unit_ids` (ids or a select of them) are detectors in the campaign, and of which category.

    Reads only these units' answers: the sound task asks this on every request."""
    rule = judging(db, campaign, campaign.judges)
    answers, settlements = unit_answers(db, unit_ids, campaign.id), unit_settlements(db, unit_ids, campaign.id)
    n_images = dict(db.execute(select(UnitImage.unit_id, func.count()).where(UnitImage.unit_id.in_(unit_ids))
                               .group_by(UnitImage.unit_id)).all())
    verdicts = (_verdict(u, answers.get(u, ()), settlements.get(u), n_images[u], rule) for u in n_images)
    return {v.unit: v.category for v in verdicts if v is not None and v.is_detector}


def maybe_detectors(campaign: Campaign):
    """A select of the campaign's units that may be detectors: all their annotators and at least two (or
    all) of them saying yes, else an admin's yes. Fewer yeses cannot win the vote; `detector_units` decides."""
    yes_needed = min(2, campaign.judges)
    answered = (select(Annotation.unit_id).where(Annotation.campaign_id == campaign.id,
                                                 Annotation.unit_id.not_in(gold_unit_ids(campaign.id)),
                                                 Annotation.annotator_id.not_in(excluded_ids(campaign.id)))
                .group_by(Annotation.unit_id)
                .having(func.count() >= (yes_needed if campaign.adaptive else campaign.judges),
                        func.sum(case((Annotation.answer == "yes", 1), else_=0)) >= yes_needed))
    return union(answered, select(UnitSettlement.unit_id).where(UnitSettlement.campaign_id == campaign.id,
                                                                UnitSettlement.answer == "yes"))


def check_consensus(consensus: str) -> str:
    if consensus not in CONSENSUS_METHODS:
        raise TaskError(f"consensus: one of {', '.join(CONSENSUS_METHODS)}; got {consensus!r}.")
    return consensus


def consensus_labels(rule: Judging, answers: dict[int, list[UnitAnswer]],
                     gold: list[tuple[str, dict[str, str]]] = ()) -> dict[int, Settlement]:
    """Dawid-Skene's answer and object for each unit with the answers `rule` asks, fitted on those units at
    once and anchored on the campaign's answered `gold` units (annotation/consensus.py)."""
    complete = {unit: given for unit, given in answers.items() if given and len(given) >= rule.needed(given)}
    if not complete:
        return {}
    units = sorted(complete)
    estimate = consensus_estimate([{a.annotator: a.label for a in complete[unit]} for unit in units], gold)
    return {unit: label_as_settlement(label) for unit, label in zip(units, estimate.labels)}


def run_report(db: Session, run: Run, campaign: Campaign | None, consensus: str = "majority",
               alpha_resamples: int = 0) -> RunReport:
    """Everything the results page and the exports say about `run` in `campaign` (None: no answers yet), each
    unit's answer and object chosen by `consensus`: "majority" or "dawid-skene"; Krippendorff's alpha with
    `alpha_resamples` bootstrap resamples when asked (the results page and the table1 API)."""
    check_consensus(consensus)
    settings = campaign_annotation_settings(campaign) if campaign is not None else ANNOTATION
    rule = judging(db, campaign, settings.annotators_per_unit)
    campaign_id = campaign.id if campaign is not None else None
    netdissect = aliased(Category)
    units = db.execute(select(Unit.id, Layer.name, Unit.index, Unit.auto_precision, Category.name, Unit.auto_iou,
                              netdissect.name, Unit.auto_netdissect_iou)
                       .join(Layer, Unit.layer_id == Layer.id)
                       .outerjoin(Category, Unit.auto_category_id == Category.id)
                       .outerjoin(netdissect, Unit.auto_netdissect_category_id == netdissect.id)
                       .where(Layer.run_id == run.id).order_by(Layer.name, Unit.index)).all()
    unit_ids = [u.id for u in units]
    images: dict[int, list[int]] = defaultdict(list)           # unit -> image ids, best first
    for unit_id, image_id in db.execute(select(UnitImage.unit_id, UnitImage.id)
                                        .where(UnitImage.unit_id.in_(unit_ids)).order_by(UnitImage.rank)):
        images[unit_id].append(image_id)
    answers, settlements = unit_answers(db, unit_ids, campaign_id), unit_settlements(db, unit_ids, campaign_id)
    modelled = (consensus_labels(rule, answers, answered_gold(db, campaign_id) if campaign_id is not None else [])
                if consensus == "dawid-skene" else {})

    rows = []
    for u in units:
        given = tuple(answers.get(u.id, ()))
        verdict = _verdict(u.id, given, settlements.get(u.id), len(images[u.id]), rule, modelled.get(u.id))
        rows.append(UnitRow(u.id, u[1], u.index, given, verdict, u[4], u.auto_precision,
                            tuple(images[u.id][:GALLERY_IMAGES]), u.auto_iou, u[6], u.auto_netdissect_iou))
    verdicts = [r.verdict for r in rows if r.verdict is not None]
    verdict_units = {v.unit for v in verdicts}

    judgements = [ClipJudgement(unit_id, rank, annotator, audible) for unit_id, rank, annotator, audible in db.execute(
        select(UnitImage.unit_id, UnitImage.rank, Annotator.name, SoundJudgement.audible)
        .join(UnitImage, SoundJudgement.unit_image_id == UnitImage.id)
        .join(Annotator, SoundJudgement.annotator_id == Annotator.id)
        .where(SoundJudgement.campaign_id == campaign_id, UnitImage.unit_id.in_(unit_ids)))]
    characteristic = characteristic_flags(db)
    # The automatic label as a detector label: its category when dissection found it precise enough.
    automatic_labels = {r.unit_id: (r.auto_category if _auto_detector(r, DETECTOR_PRECISION) else None)
                        for r in rows if r.auto_precision is not None}
    review_units = {v.unit for v in units_for_review(verdicts)}
    judged = [len(answers.get(v.unit, ())) for v in verdicts if not v.settled]
    return RunReport(
        run=run, campaign=campaign, units=rows, verdicts=verdicts, characteristic=characteristic,
        table1=table1(verdicts, characteristic, judgements),
        histogram=detector_histogram(verdicts),
        threshold_counts=detectors_by_threshold(verdicts, THRESHOLDS),
        agreement=agreement_summary({u: a for u, a in answers.items() if u in verdict_units},
                                    settings.annotators_per_unit),
        automatic=automatic_agreement(verdicts, automatic_labels), automatic_labels=automatic_labels,
        review=[r for r in rows if r.unit_id in review_units],
        complete_units=len(verdicts),
        auto_detectors=automatic_detectors(rows, characteristic, DETECTOR_PRECISION), consensus=consensus,
        alpha=krippendorff_alpha([{a.annotator: a.label for a in answers.get(u, ())} for u in sorted(verdict_units)],
                                 resamples=alpha_resamples) if alpha_resamples else None,
        judgments_per_unit=sum(judged) / len(judged) if judged else None)


def default_report(db: Session, run: Run) -> RunReport:
    """`run_report` of the run's default campaign (the pages that show one verdict per unit: unit pages, Listen)."""
    return run_report(db, run, default_campaign(db, run.id))


def detector_records(report: RunReport) -> list[dict]:
    """The detectors export: one record per detector unit. `unit` is the unit's database id (as in URLs);
    `layer` and `index_in_layer`, its 0-based channel in the network's layer, are what pages call it
    ("conv5 unit 11")."""
    return [{"unit": row.unit_id, "layer": row.layer, "index_in_layer": row.index, "category": row.verdict.category,
             "precision": round(row.verdict.precision, 4), "annotators": len(row.verdict.annotators),
             "agreement": None if row.verdict.agreement is None else round(row.verdict.agreement, 4),
             "characteristic": report.characteristic.get(row.verdict.category, False)}
            for row in report.detectors]


def detectors_csv(records: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["unit", "layer", "index_in_layer", "category", "precision", "annotators", "agreement",
                                             "characteristic"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def table1_record(report: RunReport) -> dict:
    return {"run": report.run.name, "campaign": report.campaign.name if report.campaign else None,
            **asdict(report.table1),
            "rows": [{"row": label, "value": value} for label, value in report.table1.rows()]}


def verdict_label(verdict: UnitVerdict) -> str | None:
    """A verdict as one label ("no", "texture", "yes:<category>"), as answers are compared; None while tied."""
    if verdict.answer is None or (verdict.answer == "yes" and verdict.category is None):
        return None
    return answer_label(verdict.answer, verdict.category)


@dataclass(frozen=True)
class AnnotatorsReport:
    """A campaign's annotators page and API: each annotator's quality, and how many judgments units took."""

    campaign: Campaign
    consensus: str
    items: list[dict]                    # backend/app/gold.py's `campaign_quality` rows
    gold_units: int
    judgments_per_unit: float | None


def annotators_report(db: Session, campaign: Campaign, consensus: str = "majority") -> AnnotatorsReport:
    """Each annotator's answers, gold accuracy, agreement with the `consensus` verdicts, median seconds and
    skips in the campaign."""
    from backend.app.gold import campaign_quality

    report = run_report(db, campaign.run, campaign, consensus)
    labels = {v.unit: label for v in report.verdicts if (label := verdict_label(v)) is not None}
    gold_units = db.scalar(select(func.count()).select_from(gold_unit_ids(campaign.id).subquery()))
    return AnnotatorsReport(campaign, consensus, campaign_quality(db, campaign, labels), gold_units,
                            report.judgments_per_unit)
