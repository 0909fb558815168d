"""A run's raw annotations and sound judgements in one of its campaigns as records (one per annotator and unit, one per annotator
and clip), and any records as CSV: the exports of the results page, the API and `ambient export`.

A top image's rank counts from 1 (the unit's strongest image), as the pages number them ("image 1").

The per-unit verdicts (the detectors) come from backend/app/results.py's `detector_records`."""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.results import detector_records, run_report
from backend.db.models import (Annotation, Annotator, Campaign, Category, ImageMark, Layer, Run, SoundJudgement, Unit,
                               UnitImage)

EXPORTS = ("annotations", "judgements", "detectors")
ANNOTATION_FIELDS = ["unit", "layer", "index_in_layer", "annotator", "answer", "category", "marked_ranks",
                     "marked_image_ids", "created_at"]
JUDGEMENT_FIELDS = ["unit", "layer", "index_in_layer", "image", "rank", "frame", "annotator", "audible",
                    "created_at"]
DETECTOR_FIELDS = ["unit", "layer", "index_in_layer", "category", "precision", "annotators", "agreement",
                   "characteristic"]
FIELDS = {"annotations": ANNOTATION_FIELDS, "judgements": JUDGEMENT_FIELDS, "detectors": DETECTOR_FIELDS}


def _iso(moment: datetime) -> str:
    # SQLite hands DateTime(timezone=True) back without its zone; every stored time is UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).isoformat()


def _campaign_id(campaign: Campaign | None) -> int | None:
    # No campaign: no answers (every answer belongs to one, so `campaign_id == None` matches none).
    return campaign.id if campaign is not None else None


def annotation_records(db: Session, run: Run, campaign: Campaign | None) -> list[dict]:
    """Every annotator's answer for every unit of `run` in `campaign`, oldest first: the answer, the category
    named (for a yes), the images marked (ranks from 1, and image ids) and when."""
    marks: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for annotation_id, rank, image_id in db.execute(
            select(ImageMark.annotation_id, UnitImage.rank, UnitImage.id)
            .join(UnitImage, ImageMark.unit_image_id == UnitImage.id).join(Unit, UnitImage.unit_id == Unit.id)
            .join(Layer, Unit.layer_id == Layer.id).join(Annotation, ImageMark.annotation_id == Annotation.id)
            .where(Layer.run_id == run.id, Annotation.campaign_id == _campaign_id(campaign)).order_by(UnitImage.rank)):
        marks[annotation_id].append((rank + 1, image_id))
    rows = db.execute(select(Annotation.id, Unit.id, Layer.name, Unit.index, Annotator.name, Annotation.answer,
                             Category.name, Annotation.created_at)
                      .join(Unit, Annotation.unit_id == Unit.id).join(Layer, Unit.layer_id == Layer.id)
                      .join(Annotator, Annotation.annotator_id == Annotator.id)
                      .outerjoin(Category, Annotation.category_id == Category.id)
                      .where(Layer.run_id == run.id, Annotation.campaign_id == _campaign_id(campaign))
                      .order_by(Annotation.created_at, Annotation.id))
    return [{"unit": unit_id, "layer": layer, "index_in_layer": index, "annotator": annotator, "answer": answer,
             "category": category, "marked_ranks": [rank for rank, _ in marks[annotation_id]],
             "marked_image_ids": [image for _, image in marks[annotation_id]], "created_at": _iso(created)}
            for annotation_id, unit_id, layer, index, annotator, answer, category, created in rows]


def judgement_records(db: Session, run: Run, campaign: Campaign | None) -> list[dict]:
    """Every sound judgement of `run`'s clips in `campaign`, oldest first: which image (and frame), who,
    audible or not."""
    rows = db.execute(select(Unit.id, Layer.name, Unit.index, UnitImage.id, UnitImage.rank, UnitImage.frame_id,
                             Annotator.name, SoundJudgement.audible, SoundJudgement.created_at)
                      .join(UnitImage, SoundJudgement.unit_image_id == UnitImage.id)
                      .join(Unit, UnitImage.unit_id == Unit.id).join(Layer, Unit.layer_id == Layer.id)
                      .join(Annotator, SoundJudgement.annotator_id == Annotator.id)
                      .where(Layer.run_id == run.id, SoundJudgement.campaign_id == _campaign_id(campaign))
                      .order_by(SoundJudgement.created_at, SoundJudgement.id))
    return [{"unit": unit_id, "layer": layer, "index_in_layer": index, "image": image, "rank": rank + 1,
             "frame": frame, "annotator": annotator, "audible": audible, "created_at": _iso(created)}
            for unit_id, layer, index, image, rank, frame, annotator, audible, created in rows]


def export_records(db: Session, run: Run, what: str, campaign: Campaign | None) -> list[dict]:
    """The records of one export (`EXPORTS`) of `run` in `campaign`."""
    if what == "annotations":
        return annotation_records(db, run, campaign)
    if what == "judgements":
        return judgement_records(db, run, campaign)
    if what == "detectors":
        return detector_records(run_report(db, run, campaign))
    raise ValueError(f"{what!r}: choose one of {', '.join(EXPORTS)}")


def records_csv(records: list[dict], fields: list[str]) -> str:
    """CSV with a header row; a list (marked images) is one cell of ';'-separated values, None an empty cell."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ";".join(map(str, v)) if isinstance(v, list) else v for k, v in record.items()})
    return out.getvalue()
