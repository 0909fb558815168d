"""The export API (admins): detectors, Table 1, the raw annotations and the sound judgements of a run in one of
its campaigns (`?campaign=ID`, else the run's default campaign), as CSV or JSON; and the campaigns
(GET and POST /api/v1/campaigns), their quality control (gold units, each annotator's quality, exclusions) and
Table 1 by either consensus."""
from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.campaign import (JUDGES_MAX, NAME_MAX, CampaignFields, campaign_size, complete_units, create_campaign,
                                  run_campaign)
from backend.app.deps import admin_user, check_csrf, export_file_name, get_db, json_download
from backend.app.errors import TaskError
from backend.app.exports import FIELDS, annotation_records, judgement_records, records_csv
from backend.app.gold import (GOLD_RATE_MAX, exclude_annotator, gold_from_settlements, include_annotator, set_gold,
                              unit_of_campaign)
from backend.app.results import (RunReport, annotators_report, default_report, detector_records, detectors_csv,
                                 run_report, table1_record)
from backend.app.routes.results import ALPHA_RESAMPLES
from backend.db.models import Annotator, Campaign, Run
from model.settings import ANNOTATION

router = APIRouter(prefix="/api", tags=["export"], dependencies=[Depends(admin_user)])
# Which campaign of the run: its answers only (absent: the run's default campaign).
CampaignId = Annotated[int | None, Query(description="a campaign of the run; absent: the run's default campaign")]


class RunSummary(BaseModel):
    id: int
    name: str
    model_kind: str
    labels_kind: str | None
    units: int
    complete_units: int
    detectors: int


class Detector(BaseModel):
    unit: int              # the unit's id, as the pages show it ("Unit 12")
    layer: str
    index_in_layer: int    # its 0-based channel in the layer
    category: str
    precision: float
    annotators: int
    agreement: float | None
    characteristic: bool


class AnnotationRecord(BaseModel):
    unit: int
    layer: str
    index_in_layer: int
    annotator: str
    answer: str                  # yes, no or texture
    category: str | None         # the object named, for a yes
    marked_ranks: list[int]      # the images marked as showing it: their ranks among the unit's top images, from 1
    marked_image_ids: list[int]  # ... and their ids (/images/{id})
    created_at: str              # ISO 8601, UTC


class JudgementRecord(BaseModel):
    unit: int
    layer: str
    index_in_layer: int
    image: int                   # the top image whose clip was judged (/clips/{id})
    rank: int                    # its rank among the unit's top images, from 1 (as the pages number them)
    frame: int
    annotator: str
    audible: str                 # yes, no or unsure
    created_at: str


class Table1Row(BaseModel):
    row: str
    value: str


class Table1Out(BaseModel):
    run: str
    campaign: str | None         # whose answers (None: the run is in no campaign yet)
    detectors: int
    characteristic_detectors: int
    videos_with_object_sound: float | None
    characteristic_sound_rate: float | None
    audible_clips: int
    clips_judged: int
    characteristic_clips_judged: int
    rows: list[Table1Row]


def _report(db: Session, run_id: int, campaign: int | None) -> RunReport:
    run = _run(db, run_id)
    return run_report(db, run, run_campaign(db, run, campaign))


@router.get("/runs", response_model=list[RunSummary])
def runs(db: Session = Depends(get_db)):
    """Every run with its annotation progress in its default campaign."""
    return [RunSummary(id=r.run.id, name=r.run.name, model_kind=r.run.model_kind, labels_kind=r.run.labels_kind,
                       units=len(r.units), complete_units=r.complete_units, detectors=len(r.detectors))
            for r in (default_report(db, run) for run in db.scalars(select(Run).order_by(Run.id)))]


@router.get("/runs/{run_id}/detectors.json", response_model=list[Detector],
            dependencies=[Depends(json_download)])
def detectors_json(run_id: int, campaign: CampaignId = None, db: Session = Depends(get_db)):
    """The run's detector units in the campaign: category, precision, annotators, agreement, characteristic-sound flag."""
    return detector_records(_report(db, run_id, campaign))


@router.get("/runs/{run_id}/detectors.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}}})
def detectors_csv_export(run_id: int, campaign: CampaignId = None, db: Session = Depends(get_db)):
    """The same detectors as CSV, one row per unit."""
    report = _report(db, run_id, campaign)
    return _csv(detectors_csv(detector_records(report)), export_file_name(run_id, campaign, "detectors.csv"))


@router.get("/runs/{run_id}/table1.json", response_model=Table1Out,
            dependencies=[Depends(json_download)])
def table1_json(run_id: int, campaign: CampaignId = None, db: Session = Depends(get_db)):
    """The paper's Table 1 for the run in the campaign, with the counts behind its two rates."""
    return table1_record(_report(db, run_id, campaign))


def _run(db: Session, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None:
        raise TaskError(f"There is no run {run_id}.", 404)
    return run


def _csv(text: str, name: str) -> PlainTextResponse:
    return PlainTextResponse(text, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _run_and_campaign(db: Session, run_id: int, campaign: int | None):
    run = _run(db, run_id)
    return run, run_campaign(db, run, campaign)


@router.get("/runs/{run_id}/annotations.json", response_model=list[AnnotationRecord],
            dependencies=[Depends(json_download)])
def annotations_json(run_id: int, campaign: CampaignId = None, db: Session = Depends(get_db)):
    """The raw annotations in the campaign: one record per annotator and unit (answer, category, marked images, time)."""
    return annotation_records(db, *_run_and_campaign(db, run_id, campaign))


@router.get("/runs/{run_id}/annotations.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}}})
def annotations_csv(run_id: int, campaign: CampaignId = None, db: Session = Depends(get_db)):
    """The raw annotations as CSV (marked images ';'-separated)."""
    return _csv(records_csv(annotation_records(db, *_run_and_campaign(db, run_id, campaign)), FIELDS["annotations"]),
                export_file_name(run_id, campaign, "annotations.csv"))


@router.get("/runs/{run_id}/judgements.json", response_model=list[JudgementRecord],
            dependencies=[Depends(json_download)])
def judgements_json(run_id: int, campaign: CampaignId = None, db: Session = Depends(get_db)):
    """The sound judgements in the campaign: one record per annotator and clip of a detector's top image."""
    return judgement_records(db, *_run_and_campaign(db, run_id, campaign))


@router.get("/runs/{run_id}/judgements.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}}})
def judgements_csv(run_id: int, campaign: CampaignId = None, db: Session = Depends(get_db)):
    """The sound judgements as CSV."""
    return _csv(records_csv(judgement_records(db, *_run_and_campaign(db, run_id, campaign)), FIELDS["judgements"]),
                export_file_name(run_id, campaign, "judgements.csv"))


# --- Campaigns (admins).

campaigns_api = APIRouter(prefix="/api/v1", tags=["campaigns"], dependencies=[Depends(admin_user)])


class CampaignOut(BaseModel):
    id: int
    name: str
    run_id: int
    layer: str
    judges: int                  # annotators per unit
    open: bool
    units: int                   # the campaign's units (its layer's units with top images)
    complete: int                # of those, with all their judges' answers or settled
    gold_rate: float             # share of each annotator's units that are gold
    adaptive: bool               # two judges, more only where they disagree or one is doubtful on gold


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    run_id: int
    layer: str = Field("conv5", max_length=200)
    judges: int = Field(ANNOTATION.annotators_per_unit, ge=1, le=JUDGES_MAX)
    open: bool = False
    blind: bool = True
    participants: list[str] | None = Field(None, max_length=1000)   # annotator names; absent: everyone
    gold_rate: float = Field(0.0, ge=0.0, le=GOLD_RATE_MAX)
    adaptive: bool = False


class CampaignList(BaseModel):
    items: list[CampaignOut]


def _campaign_out(db: Session, campaign: Campaign) -> CampaignOut:
    return CampaignOut(id=campaign.id, name=campaign.name, run_id=campaign.run_id, layer=campaign.layer,
                       judges=campaign.judges, open=campaign.is_open, units=campaign_size(db, campaign),
                       complete=complete_units(db, campaign), gold_rate=campaign.gold_rate, adaptive=campaign.adaptive)


@campaigns_api.get("/campaigns", response_model=CampaignList)
def campaigns(db: Session = Depends(get_db)):
    """Every campaign, with its units and how many are complete."""
    return CampaignList(items=[_campaign_out(db, c) for c in db.scalars(select(Campaign).order_by(Campaign.id))])


@campaigns_api.post("/campaigns", response_model=CampaignOut, status_code=201, dependencies=[Depends(check_csrf)])
def new_campaign(body: CampaignIn, db: Session = Depends(get_db)):
    """A new campaign of a run's layer (422 naming the bad field)."""
    campaign = create_campaign(db, CampaignFields(
        name=body.name, run_id=body.run_id, layer=body.layer, judges=body.judges, blind=body.blind,
        everyone=body.participants is None, participants=tuple(body.participants or ()), open=body.open,
        gold_rate=body.gold_rate, adaptive=body.adaptive))
    return _campaign_out(db, campaign)


Consensus = Annotated[Literal["majority", "dawid-skene"],
                      Query(description="how each unit's answer and object are chosen from its judges")]


def _campaign(db: Session, campaign_id: int) -> Campaign:
    campaign = db.get(Campaign, campaign_id)
    if campaign is None:
        raise HTTPException(404, f"There is no campaign {campaign_id}.")
    return campaign


class Table1ByConsensus(Table1Out):
    consensus: str
    histogram: dict[str, int]    # detectors per category (Fig. 3)
    fleiss_kappa: float | None
    krippendorff_alpha: float | None
    alpha_interval: list[float | None] | None   # 95% bootstrap interval (null ends: undefined)
    judgments_per_unit: float | None


@campaigns_api.get("/campaigns/{campaign_id}/table1", response_model=Table1ByConsensus)
def campaign_table1(campaign_id: int, consensus: Consensus = "majority", db: Session = Depends(get_db)):
    """Table 1 and the histogram of the campaign, each unit decided by `consensus` (gold units never count)."""
    campaign = _campaign(db, campaign_id)
    report = run_report(db, campaign.run, campaign, consensus, alpha_resamples=ALPHA_RESAMPLES)
    alpha = report.alpha
    return {**table1_record(report), "consensus": consensus, "histogram": report.histogram,
            "fleiss_kappa": _finite(report.agreement.kappa) if report.agreement else None,
            "krippendorff_alpha": _finite(alpha.alpha) if alpha else None,
            "alpha_interval": [_finite(alpha.low), _finite(alpha.high)] if alpha else None,
            "judgments_per_unit": report.judgments_per_unit}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class AnnotatorQualityOut(BaseModel):
    name: str
    answers: int                 # every answer in the campaign, gold included
    gold_answered: int
    gold_accuracy: float | None  # right answer and object on gold units; null before any
    gold_marks: float | None     # marks' overlap with the known images, where known
    agreement: float | None      # share of the other answers equal to the unit's consensus
    median_seconds: float | None # from the unit handed out to the answer
    skips: int
    excluded: bool               # an admin took them out: their answers count in no verdict


class AnnotatorsOut(BaseModel):
    campaign: int
    consensus: str
    gold_units: int
    judgments_per_unit: float | None   # mean counted answers per complete unit
    items: list[AnnotatorQualityOut]


@campaigns_api.get("/campaigns/{campaign_id}/annotators", response_model=AnnotatorsOut)
def campaign_annotators(campaign_id: int, consensus: Consensus = "majority", db: Session = Depends(get_db)):
    """Each annotator's quality in the campaign: answers, gold accuracy, agreement with the consensus, median
    seconds per unit, skips."""
    report = annotators_report(db, _campaign(db, campaign_id), consensus)
    return AnnotatorsOut(campaign=campaign_id, consensus=consensus, gold_units=report.gold_units,
                         judgments_per_unit=report.judgments_per_unit, items=report.items)


class GoldIn(BaseModel):
    unit: str = Field(min_length=3, max_length=220, description="LAYER:INDEX, e.g. conv5:12")
    answer: Literal["yes", "no", "texture"]
    category: str | None = Field(None, max_length=200)
    marked: list[Annotated[int, Field(ge=0, le=10_000)]] | None = Field(None, max_length=10_000)


class GoldOut(BaseModel):
    campaign: int
    unit: str
    answer: str
    category: str | None
    source: str


@campaigns_api.post("/campaigns/{campaign_id}/gold", response_model=GoldOut, status_code=201,
                    dependencies=[Depends(check_csrf)])
def add_gold(campaign_id: int, body: GoldIn, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Make a unit of the campaign gold, its answer typed by the admin (422 naming the bad field)."""
    campaign = _campaign(db, campaign_id)
    unit = unit_of_campaign(db, campaign, body.unit)
    set_gold(db, campaign, unit, body.answer, body.category, "typed", user.id, body.marked)
    return GoldOut(campaign=campaign.id, unit=body.unit, answer=body.answer,
                   category=body.category.strip().lower() if body.answer == "yes" and body.category else None,
                   source="typed")


@campaigns_api.post("/campaigns/{campaign_id}/gold/settled", status_code=201, dependencies=[Depends(check_csrf)])
def gold_from_settled(campaign_id: int, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Make every unit an admin settled in the campaign gold, with the settlement's answer (source "settled")."""
    return {"campaign": campaign_id, "added": gold_from_settlements(db, _campaign(db, campaign_id), user.id)}


class ExclusionIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)


@campaigns_api.post("/campaigns/{campaign_id}/exclusions", status_code=201, dependencies=[Depends(check_csrf)])
def exclude(campaign_id: int, body: ExclusionIn, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Exclude an annotator from the campaign: their answers leave every verdict; nothing is deleted."""
    person = exclude_annotator(db, _campaign(db, campaign_id), body.name, user.id)
    return {"campaign": campaign_id, "name": person.name, "excluded": True}


@campaigns_api.post("/campaigns/{campaign_id}/inclusions", dependencies=[Depends(check_csrf)])
def include(campaign_id: int, body: ExclusionIn, db: Session = Depends(get_db)):
    """Include an excluded annotator again: their answers count again (POST, as every change here)."""
    person = include_annotator(db, _campaign(db, campaign_id), body.name)
    return {"campaign": campaign_id, "name": person.name, "excluded": False}
