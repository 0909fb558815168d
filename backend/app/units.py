"""The unit task: its queue (backend/app/reservations.py), submitting an answer, undoing the latest one."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from annotation.aggregate import UnitAnswer
from backend.app.categories import resolve_category
from backend.app.errors import TaskError
from backend.app.reservations import (Queue, aware, check_held, filling_a_slot, lock, one_writer_at_a_time,
                                      open_units, reserve_next, utcnow)
from backend.db.models import (Annotation, Annotator, Category, ImageMark, Unit, UnitImage, UnitReservation,
                               UnitSettlement)
from model.settings import ANNOTATION, AnnotationSettings

UNIT_QUEUE = Queue("unit", UnitReservation, select(Annotation.unit_id, Annotation.annotator_id))
# The queue's candidates: units with top images, but for those an admin has settled (decided: they need
# no more answers).
UNITS_TO_LABEL = select(UnitImage.unit_id).where(UnitImage.unit_id.not_in(select(UnitSettlement.unit_id)))


def reserve_next_unit(db: Session, annotator_id: int, now: datetime | None = None,
                      settings: AnnotationSettings = ANNOTATION) -> UnitReservation | None:
    """The unit this annotator should label next, held for them; None when nothing is left for them."""
    return reserve_next(db, UNIT_QUEUE, annotator_id, UNITS_TO_LABEL, now or utcnow(), settings)


@dataclass(frozen=True)
class Submission:
    unit_id: int
    answer: str
    category: str | None
    marked: int


def submit_annotation(db: Session, annotator_id: int, unit_id: int, answer: str, category_name: str | None,
                      marked_image_ids: list[int], now: datetime | None = None) -> Submission:
    """Store one answer for a unit held for the annotator, committed before returning.

    Marks count only for a "yes" (an object was named)."""
    now = now or utcnow()
    if db.get(Unit, unit_id) is None:
        raise TaskError(f"There is no unit {unit_id}.", 404)
    ranks = dict(db.execute(select(UnitImage.id, UnitImage.rank).where(UnitImage.unit_id == unit_id)).all())
    foreign = sorted(set(marked_image_ids) - set(ranks))
    if foreign:
        raise TaskError(f"Images {foreign[:10]} are not images of unit {unit_id}.")
    try:   # annotation.aggregate's rules for an answer: one of ANSWERS, and a yes names its object
        UnitAnswer(str(annotator_id), answer[:20], (category_name or "").strip() or None if answer == "yes" else None,
                   frozenset(ranks[i] for i in marked_image_ids) if answer == "yes" else frozenset())
    except ValueError as error:
        hint = " (say which object: pick from the list or type a new name)" if answer == "yes" else ""
        raise TaskError(f"Your answer was not saved: {error}{hint}.") from None
    return _store_annotation(db, annotator_id, unit_id, answer, category_name, marked_image_ids, now)


@one_writer_at_a_time
def _store_annotation(db: Session, annotator_id: int, unit_id: int, answer: str, category_name: str | None,
                      marked_image_ids: list[int], now: datetime) -> Submission:
    # The checks of the slot and the writes, in one transaction under the writer lock; the checks of
    # the answer itself came before it, so that waiting writers are not held up by them.
    lock(db, UNIT_QUEUE, unit_id, now)
    with filling_a_slot(db, f"Unit {unit_id} changed while you answered it; it was not saved twice."):
        if db.scalar(select(Annotation.id).where(Annotation.unit_id == unit_id,
                                                 Annotation.annotator_id == annotator_id)):
            raise TaskError(f"You have already labelled unit {unit_id} (was the form sent twice?).", 409)
        check_held(db, UNIT_QUEUE, unit_id, annotator_id, now)
        category = resolve_category(db, category_name) if answer == "yes" else None
        marked = sorted(set(marked_image_ids)) if answer == "yes" else []
        annotation_id = db.scalar(insert(Annotation).values(
            unit_id=unit_id, annotator_id=annotator_id, answer=answer,
            category_id=category.id if category else None, created_at=now).returning(Annotation.id))
        if marked:
            db.execute(insert(ImageMark), [{"annotation_id": annotation_id, "unit_image_id": i} for i in marked])
        db.execute(delete(UnitReservation).where(UnitReservation.unit_id == unit_id,
                                                 UnitReservation.annotator_id == annotator_id))
    return Submission(unit_id, answer, category.name if category else None, len(marked))


@dataclass(frozen=True)
class Withdrawn:
    """An answer taken back by undo: what its unit's page fills in again."""
    unit_id: int
    answer: str
    category: str | None
    marked_image_ids: list[int]


def _undo_window(db: Session, annotator_id: int, undo_minutes: int, last_judge_seconds: int,
                 settings: AnnotationSettings) -> tuple[Annotation | None, datetime | None, str | None]:
    """The annotator's latest answer, until when undo may take it back, and why it may not (None: it may,
    until then). The answer that gave its unit its last judge can be taken back for `last_judge_seconds`
    only: a complete unit's verdict may soon be in use."""
    last = db.scalar(select(Annotation).where(Annotation.annotator_id == annotator_id)
                     .order_by(Annotation.created_at.desc(), Annotation.id.desc()).limit(1))
    if last is None:
        return None, None, "You have no submission to undo."
    last_undo = db.scalar(select(Annotator.last_undo_at).where(Annotator.id == annotator_id))
    if last_undo is not None and aware(last.created_at) <= aware(last_undo):
        return last, None, "Undo goes back one answer only: answer the unit you are holding."
    if db.scalar(select(UnitSettlement.id).where(UnitSettlement.unit_id == last.unit_id)) is not None:
        return last, None, f"Unit {last.unit_id} has been settled by an admin, so yours stands."
    until = aware(last.created_at) + timedelta(minutes=undo_minutes)
    if db.scalar(select(func.count()).where(Annotation.unit_id == last.unit_id)) >= settings.annotators_per_unit:
        newest = db.scalar(select(Annotation.id).where(Annotation.unit_id == last.unit_id)
                           .order_by(Annotation.created_at.desc(), Annotation.id.desc()).limit(1))
        if newest != last.id:
            return last, None, f"Unit {last.unit_id} has all its answers now, so yours stands."
        until = min(until, aware(last.created_at) + timedelta(seconds=last_judge_seconds))
    return last, until, None


def undo_deadline(db: Session, annotator_id: int, undo_minutes: int, last_judge_seconds: int,
                  now: datetime | None = None, settings: AnnotationSettings = ANNOTATION) -> datetime | None:
    """Until when the annotator's latest answer can be undone; None when it cannot (then no page offers Undo)."""
    _last, until, problem = _undo_window(db, annotator_id, undo_minutes, last_judge_seconds, settings)
    return until if problem is None and (now or utcnow()) < until else None


@one_writer_at_a_time
def undo_last_annotation(db: Session, annotator_id: int, undo_minutes: int, last_judge_seconds: int,
                         now: datetime | None = None, settings: AnnotationSettings = ANNOTATION) -> Withdrawn:
    """Delete this annotator's latest answer and hold its unit for them again; returns what the answer was.

    One step back only: the answer must be younger than `undo_minutes`, given after their last undo
    (so undo never walks back through their history), and its unit must lack a settlement. On a unit with
    all its annotators only the last of them may undo, within `last_judge_seconds`; the unit's verdict,
    computed from the answers it has, then lacks theirs again."""
    now = now or utcnow()
    lock(db, UNIT_QUEUE, None, now)
    last, until, problem = _undo_window(db, annotator_id, undo_minutes, last_judge_seconds, settings)
    if problem is None and now >= until:
        completed = until < aware(last.created_at) + timedelta(minutes=undo_minutes)
        problem = (f"Your answer completed unit {last.unit_id}: it could be taken back for {last_judge_seconds} "
                   "seconds only, so it stands." if completed else
                   f"Your latest answer (unit {last.unit_id}) is over {undo_minutes} minutes old: it stands.")
    if problem is not None:
        db.rollback()
        raise TaskError(problem, 409)
    unit_id = last.unit_id
    category = db.scalar(select(Category.name).where(Category.id == last.category_id)) if last.category_id else None
    withdrawn = Withdrawn(unit_id, last.answer, category,
                          sorted(db.scalars(select(ImageMark.unit_image_id).where(ImageMark.annotation_id == last.id))))
    db.delete(last)
    db.execute(update(Annotator).where(Annotator.id == annotator_id).values(last_undo_at=now))
    # Whatever else they held goes back to the queue: they are returning to this unit.
    db.execute(delete(UnitReservation).where(UnitReservation.annotator_id == annotator_id))
    db.add(UnitReservation(unit_id=unit_id, annotator_id=annotator_id,
                           expires_at=now + timedelta(minutes=settings.reservation_minutes)))
    db.commit()
    return withdrawn


def units_left(db: Session, annotator_id: int, settings: AnnotationSettings = ANNOTATION) -> int:
    """How many units the queue could still hand this annotator: not answered by them, a slot free."""
    candidates = open_units(UNIT_QUEUE, annotator_id, UNITS_TO_LABEL, utcnow(), settings)
    return db.scalar(select(func.count()).select_from(candidates.subquery()))


def submission_count(db: Session, annotator_id: int) -> int:
    return db.scalar(select(func.count()).select_from(Annotation).where(Annotation.annotator_id == annotator_id))
