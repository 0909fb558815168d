"""The export API (admins): detectors, Table 1, the raw annotations and the sound judgements of a run,
as CSV or JSON."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.deps import admin_user, get_db, json_download
from backend.app.errors import TaskError
from backend.app.exports import FIELDS, annotation_records, judgement_records, records_csv
from backend.app.results import RunReport, detector_records, detectors_csv, run_report, table1_record
from backend.db.models import Run

router = APIRouter(prefix="/api", tags=["export"], dependencies=[Depends(admin_user)])


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
    detectors: int
    characteristic_detectors: int
    videos_with_object_sound: float | None
    characteristic_sound_rate: float | None
    audible_clips: int
    clips_judged: int
    characteristic_clips_judged: int
    rows: list[Table1Row]


def _report(db: Session, run_id: int) -> RunReport:
    run = db.get(Run, run_id)
    if run is None:
        raise TaskError(f"There is no run {run_id}.", 404)
    return run_report(db, run)


@router.get("/runs", response_model=list[RunSummary])
def runs(db: Session = Depends(get_db)):
    """Every run with its annotation progress."""
    return [RunSummary(id=r.run.id, name=r.run.name, model_kind=r.run.model_kind, labels_kind=r.run.labels_kind,
                       units=len(r.units), complete_units=r.complete_units, detectors=len(r.detectors))
            for r in (run_report(db, run) for run in db.scalars(select(Run).order_by(Run.id)))]


@router.get("/runs/{run_id}/detectors.json", response_model=list[Detector],
            dependencies=[Depends(json_download)])
def detectors_json(run_id: int, db: Session = Depends(get_db)):
    """The run's detector units: category, precision, annotators, agreement, characteristic-sound flag."""
    return detector_records(_report(db, run_id))


@router.get("/runs/{run_id}/detectors.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}}})
def detectors_csv_export(run_id: int, db: Session = Depends(get_db)):
    """The same detectors as CSV, one row per unit."""
    report = _report(db, run_id)
    return PlainTextResponse(detectors_csv(detector_records(report)), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="run{run_id}_detectors.csv"'})


@router.get("/runs/{run_id}/table1.json", response_model=Table1Out,
            dependencies=[Depends(json_download)])
def table1_json(run_id: int, db: Session = Depends(get_db)):
    """The paper's Table 1 for the run, with the counts behind its two rates."""
    return table1_record(_report(db, run_id))


def _run(db: Session, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None:
        raise TaskError(f"There is no run {run_id}.", 404)
    return run


def _csv(text: str, name: str) -> PlainTextResponse:
    return PlainTextResponse(text, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/runs/{run_id}/annotations.json", response_model=list[AnnotationRecord],
            dependencies=[Depends(json_download)])
def annotations_json(run_id: int, db: Session = Depends(get_db)):
    """The raw annotations: one record per annotator and unit (answer, category, marked images, time)."""
    return annotation_records(db, _run(db, run_id))


@router.get("/runs/{run_id}/annotations.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}}})
def annotations_csv(run_id: int, db: Session = Depends(get_db)):
    """The raw annotations as CSV (marked images ';'-separated)."""
    return _csv(records_csv(annotation_records(db, _run(db, run_id)), FIELDS["annotations"]),
                f"run{run_id}_annotations.csv")


@router.get("/runs/{run_id}/judgements.json", response_model=list[JudgementRecord],
            dependencies=[Depends(json_download)])
def judgements_json(run_id: int, db: Session = Depends(get_db)):
    """The sound judgements: one record per annotator and clip of a detector's top image."""
    return judgement_records(db, _run(db, run_id))


@router.get("/runs/{run_id}/judgements.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}}}})
def judgements_csv(run_id: int, db: Session = Depends(get_db)):
    """The sound judgements as CSV."""
    return _csv(records_csv(judgement_records(db, _run(db, run_id)), FIELDS["judgements"]),
                f"run{run_id}_judgements.csv")
