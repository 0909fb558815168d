"""The export API (admins): detectors, Table 1, the raw annotations and the sound judgements of a run in one of
its campaigns (`?campaign=ID`, else the run's default campaign), as CSV or JSON; and the campaigns
(GET and POST /api/v1/campaigns)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.campaign import (JUDGES_MAX, NAME_MAX, CampaignFields, campaign_size, complete_units, create_campaign,
                                  run_campaign)
from backend.app.deps import admin_user, check_csrf, get_db, json_download
from backend.app.errors import TaskError
from backend.app.exports import FIELDS, annotation_records, judgement_records, records_csv
from backend.app.results import RunReport, default_report, detector_records, detectors_csv, run_report, table1_record
from backend.db.models import Campaign, Run
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


def _name(run_id: int, campaign: int | None, what: str) -> str:
    return f"run{run_id}" + (f"_campaign{campaign}" if campaign is not None else "") + f"_{what}"


@router.get("/runs/{run_id}/detectors.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}}})
def detectors_csv_export(run_id: int, campaign: CampaignId = None, db: Session = Depends(get_db)):
    """The same detectors as CSV, one row per unit."""
    report = _report(db, run_id, campaign)
    return _csv(detectors_csv(detector_records(report)), _name(run_id, campaign, "detectors.csv"))


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
                _name(run_id, campaign, "annotations.csv"))


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
                _name(run_id, campaign, "judgements.csv"))


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


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=NAME_MAX)
    run_id: int
    layer: str = Field("conv5", max_length=200)
    judges: int = Field(ANNOTATION.annotators_per_unit, ge=1, le=JUDGES_MAX)
    open: bool = False
    blind: bool = True
    participants: list[str] | None = Field(None, max_length=1000)   # annotator names; absent: everyone


class CampaignList(BaseModel):
    items: list[CampaignOut]


def _campaign_out(db: Session, campaign: Campaign) -> CampaignOut:
    return CampaignOut(id=campaign.id, name=campaign.name, run_id=campaign.run_id, layer=campaign.layer,
                       judges=campaign.judges, open=campaign.is_open, units=campaign_size(db, campaign),
                       complete=complete_units(db, campaign))


@campaigns_api.get("/campaigns", response_model=CampaignList)
def campaigns(db: Session = Depends(get_db)):
    """Every campaign, with its units and how many are complete."""
    return CampaignList(items=[_campaign_out(db, c) for c in db.scalars(select(Campaign).order_by(Campaign.id))])


@campaigns_api.post("/campaigns", response_model=CampaignOut, status_code=201, dependencies=[Depends(check_csrf)])
def new_campaign(body: CampaignIn, db: Session = Depends(get_db)):
    """A new campaign of a run's layer (422 naming the bad field)."""
    campaign = create_campaign(db, CampaignFields(
        name=body.name, run_id=body.run_id, layer=body.layer, judges=body.judges, blind=body.blind,
        everyone=body.participants is None, participants=tuple(body.participants or ()), open=body.open))
    return _campaign_out(db, campaign)
