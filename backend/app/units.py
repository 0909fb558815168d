"""The unit task: its queue in each campaign (backend/app/reservations.py), submitting an answer, skipping a
unit, undoing the latest answer."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.orm import Session

from annotation.aggregate import UnitAnswer
from backend.app.campaign import campaign_annotation_settings, units_to_label
from backend.app.categories import resolve_category
from backend.app.errors import TaskError
from backend.app.gold import (excluded_ids, future_gold, gold_due, gold_unit_ids, judging, next_gold,
                              seconds_between)
from backend.app.reservations import (Queue, aware, check_held, current_reservation, filling_a_slot, held_for, lock,
                                      one_writer_at_a_time, open_units, reserve_next, utcnow)
from backend.db.models import (Annotation, Annotator, Campaign, Category, GoldUnit, ImageMark, Unit, UnitImage,
                               UnitReservation, UnitSettlement, UnitSkip)
from model.settings import ANNOTATION


def _answers(campaign_id: int):
    # An excluded annotator's answers take no slot: their units go back to the queue for someone else.
    return select(Annotation.unit_id, Annotation.annotator_id).where(
        Annotation.campaign_id == campaign_id, Annotation.annotator_id.not_in(excluded_ids(campaign_id)))


def _skips(campaign_id: int):
    return select(UnitSkip.unit_id, UnitSkip.annotator_id).where(UnitSkip.campaign_id == campaign_id)


UNIT_QUEUE = Queue("unit", UnitReservation, _answers, _skips)


def reserve_next_unit(db: Session, annotator_id: int, campaign: Campaign, now: datetime | None = None,
                      hold_minutes: int | None = None) -> UnitReservation | None:
    """The unit of `campaign` this annotator should label next, held for them; None when nothing is left
    for them there. Where their gold positions fall (backend/app/gold.py's `GoldPlan`) it is one of its gold
    units they have not seen, handed out like any other; in adaptive mode a unit whose two judges agreed needs
    nobody else."""
    now = now or utcnow()
    settings = campaign_annotation_settings(campaign, hold_minutes)
    parts = queue_parts(db, campaign)
    if _regular_left(db, annotator_id, campaign, parts) and gold_due(db, campaign, annotator_id):
        held = _reserve_gold(db, annotator_id, campaign, now, settings.reservation_minutes)
        if held is not None:
            return held
    for candidates, people in parts:
        held = reserve_next(db, UNIT_QUEUE, campaign.id, annotator_id, candidates, now,
                            replace(settings, annotators_per_unit=people))
        if held is not None:
            return held
    return None


@one_writer_at_a_time
def _reserve_gold(db: Session, annotator_id: int, campaign: Campaign, now: datetime,
                  minutes: int) -> UnitReservation | None:
    """A gold unit this annotator has not seen, held for them (a unit they already hold comes back); None
    when they have seen every one. Gold units have no judges' limit: everyone may meet each once."""
    lock(db, UNIT_QUEUE, None, now)
    held = current_reservation(db, UNIT_QUEUE, annotator_id, now, campaign.id)
    if held is None:
        unit_id = next_gold(db, campaign, annotator_id)
        if unit_id is not None:
            held = UnitReservation(campaign_id=campaign.id, unit_id=unit_id, annotator_id=annotator_id,
                                   expires_at=now + timedelta(minutes=minutes), handed_at=now)
            db.add(held)
    db.commit()
    return held


def queue_parts(db: Session, campaign: Campaign) -> list[tuple[Select, int]]:
    """The campaign's units the queue may hand out (gold aside), in parts, each with how many people a unit
    takes at once (answers and others' holds), the first part first: all its judges in a fixed campaign.
    Adaptive: units whose answers call for more judges (two that disagree, or one doubtful on gold) take all
    of them; the others take two until two have answered, so that no third person is handed a unit while
    the first two are still at work on it and may yet agree; units judged enough are left out."""
    candidates = units_to_label(campaign)
    if not campaign.adaptive or campaign.judges <= 2:
        return [(candidates, campaign.judges)]
    from backend.app.results import unit_answers   # results reads the queue's campaigns; imported on use

    rule = judging(db, campaign, campaign.judges)
    needed = {unit: (len(given), rule.needed(given))
              for unit, given in unit_answers(db, candidates, campaign.id).items()}
    done = [unit for unit, (given, wanted) in needed.items() if given >= wanted]
    more = [unit for unit, (given, wanted) in needed.items() if 2 <= given < wanted]
    return [(candidates.where(Unit.id.in_(more)), campaign.judges),
            (candidates.where(Unit.id.not_in(done), Unit.id.not_in(more)), 2)]


@dataclass(frozen=True)
class Submission:
    unit_id: int
    answer: str
    category: str | None
    marked: int
    campaign_id: int


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
        # A replayed form finds no hold any more, and its answer in some campaign: say so.
        held = held_for(db, UNIT_QUEUE, unit_id, annotator_id, now)
        answered = select(Annotation.id).where(Annotation.unit_id == unit_id, Annotation.annotator_id == annotator_id)
        if db.scalar((answered if held is None else answered.where(Annotation.campaign_id == held.campaign_id))
                     .limit(1)):
            raise TaskError(f"You have already labelled unit {unit_id} (was the form sent twice?).", 409)
        held = check_held(db, UNIT_QUEUE, unit_id, annotator_id, now)
        category = resolve_category(db, category_name) if answer == "yes" else None
        marked = sorted(set(marked_image_ids)) if answer == "yes" else []
        annotation_id = db.scalar(insert(Annotation).values(
            campaign_id=held.campaign_id, unit_id=unit_id, annotator_id=annotator_id, answer=answer,
            category_id=category.id if category else None, created_at=now,
            seconds=seconds_between(held.handed_at, now)).returning(Annotation.id))
        if marked:
            db.execute(insert(ImageMark), [{"annotation_id": annotation_id, "unit_image_id": i} for i in marked])
        db.execute(delete(UnitReservation).where(UnitReservation.campaign_id == held.campaign_id,
                                                 UnitReservation.unit_id == unit_id,
                                                 UnitReservation.annotator_id == annotator_id))
    return Submission(unit_id, answer, category.name if category else None, len(marked), held.campaign_id)


@one_writer_at_a_time
def skip_unit(db: Session, annotator_id: int, unit_id: int, now: datetime | None = None) -> int:
    """The annotator can't tell: the unit they hold goes back to the queue for someone else, never to be
    offered to them again in that campaign; not a judgement (the unit still needs its judges). Returns
    the campaign's id, committed."""
    now = now or utcnow()
    lock(db, UNIT_QUEUE, unit_id, now)
    with filling_a_slot(db, f"You have already skipped unit {unit_id}."):
        held = check_held(db, UNIT_QUEUE, unit_id, annotator_id, now)
        db.add(UnitSkip(campaign_id=held.campaign_id, unit_id=unit_id, annotator_id=annotator_id, created_at=now))
        db.delete(held)
    return held.campaign_id


def skip_count(db: Session, annotator_id: int, campaign_id: int | None = None) -> int:
    """How many units the annotator has skipped (in one campaign, else in all): for skip rates."""
    query = select(func.count()).select_from(UnitSkip).where(UnitSkip.annotator_id == annotator_id)
    if campaign_id is not None:
        query = query.where(UnitSkip.campaign_id == campaign_id)
    return db.scalar(query)


@dataclass(frozen=True)
class Withdrawn:
    """An answer taken back by undo: what its unit's page fills in again."""
    unit_id: int
    answer: str
    category: str | None
    marked_image_ids: list[int]


def _undo_window(db: Session, annotator_id: int, undo_minutes: int, last_judge_seconds: int
                 ) -> tuple[Annotation | None, datetime | None, str | None]:
    """The annotator's latest answer, until when undo may take it back, and why it may not (None: it may,
    until then). The answer that gave its unit its last judge in its campaign can be taken back for
    `last_judge_seconds` only: a complete unit's verdict may soon be in use."""
    last = db.scalar(select(Annotation).where(Annotation.annotator_id == annotator_id)
                     .order_by(Annotation.created_at.desc(), Annotation.id.desc()).limit(1))
    if last is None:
        return None, None, "You have no submission to undo."
    last_undo = db.scalar(select(Annotator.last_undo_at).where(Annotator.id == annotator_id))
    if last_undo is not None and aware(last.created_at) <= aware(last_undo):
        return last, None, "Undo goes back one answer only: answer the unit you are holding."
    # A gold unit (a settled one among them) has no judges' limit and its answers no verdict: undo behaves as
    # on a unit still short of judges, so that it tells nobody which units are gold.
    gold = db.scalar(gold_unit_ids(last.campaign_id).where(GoldUnit.unit_id == last.unit_id)) is not None
    if not gold and db.scalar(select(UnitSettlement.id).where(UnitSettlement.campaign_id == last.campaign_id,
                                                              UnitSettlement.unit_id == last.unit_id)) is not None:
        return last, None, f"Unit {last.unit_id} has been settled by an admin, so yours stands."
    until = aware(last.created_at) + timedelta(minutes=undo_minutes)
    # Complete by the queue's own rule (backend/app/gold.py's `judging`: adaptive campaigns need two answers that
    # agree; excluded annotators' answers do not count), so undo never reopens a unit the queue has closed.
    from backend.app.results import unit_answers   # results reads the queue's campaigns; imported on use

    campaign = db.get(Campaign, last.campaign_id)
    given = [] if gold else unit_answers(db, [last.unit_id], campaign.id).get(last.unit_id, [])
    if given and len(given) >= judging(db, campaign, campaign.judges).needed(given):
        same_unit = (Annotation.campaign_id == last.campaign_id, Annotation.unit_id == last.unit_id)
        newest = db.scalar(select(Annotation.id).where(*same_unit)
                           .order_by(Annotation.created_at.desc(), Annotation.id.desc()).limit(1))
        if newest != last.id:
            return last, None, f"Unit {last.unit_id} has all its answers now, so yours stands."
        until = min(until, aware(last.created_at) + timedelta(seconds=last_judge_seconds))
    return last, until, None


def undo_deadline(db: Session, annotator_id: int, undo_minutes: int, last_judge_seconds: int,
                  now: datetime | None = None) -> datetime | None:
    """Until when the annotator's latest answer can be undone; None when it cannot (then no page offers Undo)."""
    _last, until, problem = _undo_window(db, annotator_id, undo_minutes, last_judge_seconds)
    return until if problem is None and (now or utcnow()) < until else None


@one_writer_at_a_time
def undo_last_annotation(db: Session, annotator_id: int, undo_minutes: int, last_judge_seconds: int,
                         now: datetime | None = None, hold_minutes: int = ANNOTATION.reservation_minutes) -> Withdrawn:
    """Delete this annotator's latest answer and hold its unit for them again; returns what the answer was.

    One step back only: the answer must be younger than `undo_minutes`, given after their last undo
    (so undo never walks back through their history), and its unit must lack a settlement in its campaign.
    On a unit with all its judges only the last of them may undo, within `last_judge_seconds`; the unit's
    verdict, computed from the answers it has, then lacks theirs again."""
    now = now or utcnow()
    lock(db, UNIT_QUEUE, None, now)
    last, until, problem = _undo_window(db, annotator_id, undo_minutes, last_judge_seconds)
    if problem is None and now >= until:
        completed = until < aware(last.created_at) + timedelta(minutes=undo_minutes)
        problem = (f"Your answer completed unit {last.unit_id}: it could be taken back for {last_judge_seconds} "
                   "seconds only, so it stands." if completed else
                   f"Your latest answer (unit {last.unit_id}) is over {undo_minutes} minutes old: it stands.")
    if problem is not None:
        db.rollback()
        raise TaskError(problem, 409)
    unit_id, campaign_id = last.unit_id, last.campaign_id
    category = db.scalar(select(Category.name).where(Category.id == last.category_id)) if last.category_id else None
    withdrawn = Withdrawn(unit_id, last.answer, category,
                          sorted(db.scalars(select(ImageMark.unit_image_id).where(ImageMark.annotation_id == last.id))))
    db.delete(last)
    db.execute(update(Annotator).where(Annotator.id == annotator_id).values(last_undo_at=now))
    # Whatever else they held goes back to the queue: they are returning to this unit.
    db.execute(delete(UnitReservation).where(UnitReservation.annotator_id == annotator_id))
    db.add(UnitReservation(campaign_id=campaign_id, unit_id=unit_id, annotator_id=annotator_id,
                           expires_at=now + timedelta(minutes=hold_minutes), handed_at=now))
    db.commit()
    return withdrawn


def units_left(db: Session, annotator_id: int, campaign: Campaign) -> int:
    """How many units of `campaign` its queue could still hand this annotator: those neither answered nor
    skipped by them with a slot free, and the gold units it would mix in between them (so that the count
    falls by one with every answer, gold or not: nothing tells a gold unit)."""
    regular = _regular_left(db, annotator_id, campaign)
    return regular + future_gold(db, campaign, annotator_id, regular)


def _regular_left(db: Session, annotator_id: int, campaign: Campaign, parts=None) -> int:
    """The units (gold aside) of `campaign` its queue could still hand this annotator (`parts`: `queue_parts`)."""
    settings = campaign_annotation_settings(campaign)
    return sum(db.scalar(select(func.count()).select_from(
                   open_units(UNIT_QUEUE, campaign.id, annotator_id, candidates, utcnow(),
                              replace(settings, annotators_per_unit=people)).subquery()))
               for candidates, people in (parts if parts is not None else queue_parts(db, campaign)))


def submission_count(db: Session, annotator_id: int) -> int:
    return db.scalar(select(func.count()).select_from(Annotation).where(Annotation.annotator_id == annotator_id))
