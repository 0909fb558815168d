"""The annotators' work: the unit queue with reservations, submissions, undo, and the sound task.

Concurrency: each change that hands out or fills a unit slot first deletes expired reservations.
On SQLite that write takes the database's single write lock, so the checks and inserts after it
cannot interleave with another request's; on PostgreSQL the unit row is locked FOR UPDATE.
Either way the unique (unit, annotator) constraints stop a replayed form from counting twice.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import wraps

from sqlalchemy import delete, func, insert, or_, select, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.app.security import normalise_category_name
from backend.db.models import (ANSWERS, AUDIBLE, Annotation, Category, ImageMark, SoundJudgement, Unit,
                               UnitImage, UnitReservation)
from model.settings import ANNOTATION, AnnotationSettings


class TaskError(Exception):
    """A request the task cannot honour; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_SQLITE_WRITER = threading.Lock()


def _one_writer_at_a_time(function):
    """On SQLite, this process's writes queue on a lock instead of in SQLite's busy handler.

    SQLite lets one transaction write at a time and makes the others poll with growing sleeps:
    under 50 annotators that gave the queue a 5 s p95 (BENCHMARKS.md, Load). A lock hands over at
    once. Other processes and other databases still rely on the database's own locking.
    """
    @wraps(function)
    def locked(db: Session, *args, **kwargs):
        if db.get_bind().dialect.name != "sqlite":
            return function(db, *args, **kwargs)
        with _SQLITE_WRITER:
            return function(db, *args, **kwargs)
    return locked


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _lock(db: Session, unit_id: int | None, now: datetime) -> None:
    db.commit()   # end any earlier read so what follows sees the newest rows
    db.execute(delete(UnitReservation).where(UnitReservation.expires_at < now))
    if unit_id is not None:
        db.execute(select(Unit.id).where(Unit.id == unit_id).with_for_update())


def _slots_taken(unit_ids, annotator_id: int, now: datetime):
    """(unit_id, taken) for units with answers or with live reservations held by someone else."""
    held = union_all(
        select(Annotation.unit_id.label("unit_id")),
        select(UnitReservation.unit_id.label("unit_id")).where(
            UnitReservation.annotator_id != annotator_id, UnitReservation.expires_at >= now))
    held = held.subquery()
    query = select(held.c.unit_id, func.count().label("taken")).group_by(held.c.unit_id)
    if unit_ids is not None:
        query = query.where(held.c.unit_id.in_(unit_ids))
    return query


def _free_slot(db: Session, unit_id: int, annotator_id: int, now: datetime, per_unit: int) -> bool:
    taken = db.execute(_slots_taken([unit_id], annotator_id, now)).one_or_none()
    return (taken.taken if taken else 0) < per_unit


def current_reservation(db: Session, annotator_id: int, now: datetime) -> UnitReservation | None:
    return db.scalar(select(UnitReservation)
                     .where(UnitReservation.annotator_id == annotator_id, UnitReservation.expires_at >= now)
                     .order_by(UnitReservation.expires_at.desc()).limit(1))


@_one_writer_at_a_time
def reserve_next_unit(db: Session, annotator_id: int, now: datetime | None = None,
                      settings: AnnotationSettings = ANNOTATION) -> UnitReservation | None:
    """The unit this annotator should label next, held for them; None when nothing is left for them.

    A unit they already hold comes back (a reloaded page). Otherwise the most nearly complete unit
    they have not answered and that still has a free slot, so units reach their full count soonest.
    """
    now = now or utcnow()
    _lock(db, None, now)
    held = current_reservation(db, annotator_id, now)
    if held is not None:
        db.commit()
        return held
    taken = _slots_taken(None, annotator_id, now).subquery()
    answered = select(Annotation.unit_id).where(Annotation.annotator_id == annotator_id)
    has_images = select(UnitImage.id).where(UnitImage.unit_id == Unit.id).exists()
    candidates = db.scalars(
        select(Unit.id).outerjoin(taken, taken.c.unit_id == Unit.id)
        .where(Unit.id.not_in(answered), has_images,
               or_(taken.c.taken.is_(None), taken.c.taken < settings.annotators_per_unit))
        .order_by(func.coalesce(taken.c.taken, 0).desc(), Unit.id).limit(10)).all()
    for unit_id in candidates:
        db.execute(select(Unit.id).where(Unit.id == unit_id).with_for_update())
        if _free_slot(db, unit_id, annotator_id, now, settings.annotators_per_unit):
            reservation = UnitReservation(unit_id=unit_id, annotator_id=annotator_id,
                                          expires_at=now + timedelta(minutes=settings.reservation_minutes))
            db.add(reservation)
            db.commit()
            return reservation
    db.commit()
    return None


def resolve_category(db: Session, raw_name: str) -> Category:
    """The category called `raw_name` (or with it as a synonym); a new one, for an admin to merge, if none."""
    try:
        name = normalise_category_name(raw_name)
    except ValueError as error:
        raise TaskError(422, f"Category name rejected: {error}.") from None
    category = db.scalar(select(Category).where(func.lower(Category.name) == name))
    if category is None:
        for candidate in db.scalars(select(Category).where(Category.synonyms.contains(name))):
            if name in (s.strip().lower() for s in candidate.synonyms.split(";")):
                category = candidate
                break
    if category is None:
        category = Category(name=name, synonyms="", stuff=False, characteristic_sound=False)
        db.add(category)
        db.flush()
    return category


@dataclass(frozen=True)
class Submission:
    unit_id: int
    answer: str
    category: str | None
    marked: int


@_one_writer_at_a_time
def submit_annotation(db: Session, annotator_id: int, unit_id: int, answer: str, category_name: str | None,
                      marked_image_ids: list[int], now: datetime | None = None,
                      settings: AnnotationSettings = ANNOTATION) -> Submission:
    """Store one answer, committed before returning. Marks count only for a "yes" (an object was named)."""
    now = now or utcnow()
    if answer not in ANSWERS:
        raise TaskError(422, f"The answer must be one of {', '.join(ANSWERS)}; got {answer[:20]!r}.")
    if db.get(Unit, unit_id) is None:
        raise TaskError(404, f"There is no unit {unit_id}.")
    image_ids = set(db.scalars(select(UnitImage.id).where(UnitImage.unit_id == unit_id)))
    foreign = sorted(set(marked_image_ids) - image_ids)
    if foreign:
        raise TaskError(422, f"Images {foreign[:10]} are not images of unit {unit_id}.")
    if answer == "yes" and not (category_name or "").strip():
        raise TaskError(422, "You answered yes: say which object (pick from the list or type a new name).")

    _lock(db, unit_id, now)
    try:
        if db.scalar(select(Annotation.id).where(Annotation.unit_id == unit_id,
                                                 Annotation.annotator_id == annotator_id)):
            raise TaskError(409, f"You have already labelled unit {unit_id} (was the form sent twice?).")
        mine = db.scalar(select(UnitReservation.id).where(UnitReservation.unit_id == unit_id,
                                                          UnitReservation.annotator_id == annotator_id))
        if mine is None and not _free_slot(db, unit_id, annotator_id, now, settings.annotators_per_unit):
            raise TaskError(409, f"Unit {unit_id} was not held for you and has all its annotators: "
                                 "your next unit is waiting.")
        category = resolve_category(db, category_name) if answer == "yes" else None
        marked = sorted(set(marked_image_ids)) if answer == "yes" else []
        annotation_id = db.scalar(insert(Annotation).values(
            unit_id=unit_id, annotator_id=annotator_id, answer=answer,
            category_id=category.id if category else None, created_at=now).returning(Annotation.id))
        if marked:
            db.execute(insert(ImageMark), [{"annotation_id": annotation_id, "unit_image_id": i} for i in marked])
        db.execute(delete(UnitReservation).where(UnitReservation.unit_id == unit_id,
                                                 UnitReservation.annotator_id == annotator_id))
        db.commit()
    except TaskError:
        db.rollback()
        raise
    except IntegrityError:
        db.rollback()
        raise TaskError(409, f"Unit {unit_id} changed while you answered it; it was not saved twice.") from None
    return Submission(unit_id, answer, category.name if category else None, len(marked))


@_one_writer_at_a_time
def undo_last_annotation(db: Session, annotator_id: int, now: datetime | None = None,
                         settings: AnnotationSettings = ANNOTATION) -> int:
    """Delete this annotator's latest answer and hold its unit for them again; returns the unit id."""
    now = now or utcnow()
    _lock(db, None, now)
    last = db.scalar(select(Annotation).where(Annotation.annotator_id == annotator_id)
                     .order_by(Annotation.created_at.desc(), Annotation.id.desc()).limit(1))
    if last is None:
        db.rollback()
        raise TaskError(409, "You have no submission to undo.")
    unit_id = last.unit_id
    db.delete(last)
    # Whatever else they held goes back to the queue: they are returning to this unit.
    db.execute(delete(UnitReservation).where(UnitReservation.annotator_id == annotator_id))
    db.add(UnitReservation(unit_id=unit_id, annotator_id=annotator_id,
                           expires_at=now + timedelta(minutes=settings.reservation_minutes)))
    db.commit()
    return unit_id


def has_submissions(db: Session, annotator_id: int) -> bool:
    return db.scalar(select(Annotation.id).where(Annotation.annotator_id == annotator_id).limit(1)) is not None


def submission_count(db: Session, annotator_id: int) -> int:
    return db.scalar(select(func.count()).select_from(Annotation).where(Annotation.annotator_id == annotator_id))


def sound_clips(db: Session, unit_id: int, settings: AnnotationSettings = ANNOTATION) -> list[UnitImage]:
    """The unit's top images whose clips the sound task plays."""
    return list(db.scalars(select(UnitImage).where(UnitImage.unit_id == unit_id)
                           .order_by(UnitImage.rank).limit(settings.sound_clips_per_unit)))


def next_sound_unit(db: Session, annotator_id: int, detector_units: list[int],
                    settings: AnnotationSettings = ANNOTATION) -> int | None:
    """A detector unit this annotator has not judged, the one with fewest judges first (up to the quota)."""
    if not detector_units:
        return None
    judges = dict(db.execute(
        select(UnitImage.unit_id, func.count(func.distinct(SoundJudgement.annotator_id)))
        .join(SoundJudgement, SoundJudgement.unit_image_id == UnitImage.id)
        .where(UnitImage.unit_id.in_(detector_units)).group_by(UnitImage.unit_id)).all())
    mine = set(db.scalars(select(UnitImage.unit_id).join(SoundJudgement, SoundJudgement.unit_image_id == UnitImage.id)
                          .where(SoundJudgement.annotator_id == annotator_id)))
    open_units = [u for u in detector_units
                  if u not in mine and judges.get(u, 0) < settings.annotators_per_unit]
    return min(open_units, key=lambda u: (judges.get(u, 0), u)) if open_units else None


@_one_writer_at_a_time
def submit_sound_judgements(db: Session, annotator_id: int, unit_id: int, judgements: dict[int, str],
                            settings: AnnotationSettings = ANNOTATION) -> int:
    """Store one annotator's audibility judgement of each of the unit's clips, all or none."""
    clips = {image.id for image in sound_clips(db, unit_id, settings)}
    if not clips:
        raise TaskError(404, f"Unit {unit_id} has no clips to judge.")
    foreign = sorted(set(judgements) - clips)
    if foreign:
        raise TaskError(422, f"Clips {foreign[:10]} are not among unit {unit_id}'s top clips.")
    bad = sorted({value[:20] for value in judgements.values() if value not in AUDIBLE})
    if bad:
        raise TaskError(422, f"Each judgement must be one of {', '.join(AUDIBLE)}; got {bad}.")
    missing = len(clips) - len(judgements)
    if missing:
        raise TaskError(422, f"{missing} of the {len(clips)} clips are not judged yet.")
    try:
        db.execute(insert(SoundJudgement), [{"annotator_id": annotator_id, "unit_image_id": image_id,
                                             "audible": audible} for image_id, audible in judgements.items()])
        db.commit()
    except IntegrityError:
        db.rollback()
        raise TaskError(409, f"You have already judged unit {unit_id}'s clips (was the form sent twice?).") from None
    return len(judgements)
