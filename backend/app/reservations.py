"""The annotation queues: units held for one annotator at a time, shared by the unit and the sound task.

Every queue is a campaign's (backend/app/campaign.py): its answers, skips and reservations are that
campaign's, so the same unit may be judged again in another campaign. A unit takes
`annotators_per_unit` people (the campaign's judges) in each task. A slot is taken by an answer or by
someone else's live reservation; an annotator is handed a unit with a free slot, held for them for
`reservation_minutes` (the config's `hold_idle_minutes`: each view of its page and the page's heartbeat
hold it on, so the unit of a closed tab goes back soon), and may answer only a unit that was handed to them.

Concurrency: each change that hands out or fills a slot first deletes the queue's expired
reservations. On SQLite that write takes the database's single write lock, so the checks and
inserts after it cannot interleave with another request's; on PostgreSQL the unit row is locked
FOR UPDATE. Either way the unique (unit, annotator) constraints stop a replayed form counting twice.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from contextlib import contextmanager
from functools import wraps

from collections.abc import Callable

from sqlalchemy import Select, delete, func, or_, select, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.app.errors import TaskError
from backend.db.models import SoundReservation, Unit, UnitReservation
from model.settings import ANNOTATION, AnnotationSettings

_SQLITE_WRITER = threading.Lock()
BATCH = 20      # candidate units looked at per query while finding the next one


def one_writer_at_a_time(function):
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


def aware(moment: datetime) -> datetime:
    """A stored time with its zone: SQLite hands DateTime(timezone=True) back without it; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Queue:
    """One task's queue: where its reservations live, and who has answered which unit."""

    name: str                                     # "unit", "sound": for messages
    reservation: type[UnitReservation] | type[SoundReservation]
    # campaign id -> (unit_id, annotator_id), one row per annotator who answered in that campaign
    answers: Callable[[int], Select]
    # campaign id -> (unit_id, annotator_id) of the units an annotator passed on (skipped): never theirs again
    passed: Callable[[int], Select] | None = None


def lock(db: Session, queue: Queue, unit_id: int | None, now: datetime) -> None:
    db.commit()   # end any earlier read so what follows sees the newest rows
    db.execute(delete(queue.reservation).where(queue.reservation.expires_at < now)
               .execution_options(synchronize_session=False))   # SQLite's stored times have no zone to compare
    if unit_id is not None:
        db.execute(select(Unit.id).where(Unit.id == unit_id).with_for_update())


def _slots_taken(queue: Queue, campaign_id: int, unit_ids, annotator_id: int, now: datetime):
    """(unit_id, taken) for `unit_ids` (ids or a select of them) with answers in the campaign or with its
    live reservations held by someone else."""
    answers = queue.answers(campaign_id)
    answers = answers.where(answers.selected_columns[0].in_(unit_ids)).subquery()
    held = union_all(
        select(answers.c.unit_id.label("unit_id")),
        select(queue.reservation.unit_id.label("unit_id")).where(
            queue.reservation.campaign_id == campaign_id,
            queue.reservation.unit_id.in_(unit_ids), queue.reservation.annotator_id != annotator_id,
            queue.reservation.expires_at >= now)).subquery()
    return select(held.c.unit_id, func.count().label("taken")).group_by(held.c.unit_id)


def free_slot(db: Session, queue: Queue, campaign_id: int, unit_id: int, annotator_id: int, now: datetime,
              per_unit: int) -> bool:
    taken = db.execute(_slots_taken(queue, campaign_id, [unit_id], annotator_id, now)).one_or_none()
    return (taken.taken if taken else 0) < per_unit


def current_reservation(db: Session, queue: Queue, annotator_id: int, now: datetime, campaign_id: int | None = None):
    """The annotator's live reservation (in `campaign_id`, else in any campaign), the latest first."""
    query = select(queue.reservation).where(queue.reservation.annotator_id == annotator_id,
                                            queue.reservation.expires_at >= now)
    if campaign_id is not None:
        query = query.where(queue.reservation.campaign_id == campaign_id)
    return db.scalar(query.order_by(queue.reservation.expires_at.desc()).limit(1))


def held_for(db: Session, queue: Queue, unit_id: int, annotator_id: int, now: datetime):
    """This annotator's live reservation of `unit_id` (in whichever campaign handed it), or None."""
    return db.scalar(select(queue.reservation).where(
        queue.reservation.unit_id == unit_id, queue.reservation.annotator_id == annotator_id,
        queue.reservation.expires_at >= now).order_by(queue.reservation.expires_at.desc()).limit(1))


@one_writer_at_a_time
def hold_on(db: Session, queue: Queue, annotator_id: int, now: datetime, minutes: int) -> None:
    """Push the annotator's live holds `minutes` on from now (they are at work on them), committed. Only holds
    past half their time are written: a page view right after the queue handed the unit writes nothing."""
    db.execute(update(queue.reservation).where(queue.reservation.annotator_id == annotator_id,
                                               queue.reservation.expires_at >= now,
                                               queue.reservation.expires_at < now + timedelta(minutes=minutes / 2))
               .values(expires_at=now + timedelta(minutes=minutes))
               .execution_options(synchronize_session=False))   # SQLite's stored times have no zone to compare
    db.commit()


def release_holds(db: Session, annotator_id: int) -> None:
    """Give every unit the annotator holds, in both tasks, back to its queue (logging out), committed."""
    for reservation in (UnitReservation, SoundReservation):
        db.execute(delete(reservation).where(reservation.annotator_id == annotator_id))
    db.commit()


def open_units(queue: Queue, campaign_id: int, annotator_id: int, candidates, now: datetime,
               settings: AnnotationSettings = ANNOTATION) -> Select:
    """A select of the `candidates` (ids or a select of them) this annotator has neither answered nor passed
    on in the campaign and that have a free slot there, most nearly complete first (so units reach their
    full count soonest)."""
    taken = _slots_taken(queue, campaign_id, candidates, annotator_id, now).subquery()
    answers = queue.answers(campaign_id)
    answered = answers.where(answers.selected_columns[1] == annotator_id).with_only_columns(
        answers.selected_columns[0])
    query = (select(Unit.id).outerjoin(taken, taken.c.unit_id == Unit.id)
             .where(Unit.id.in_(candidates), Unit.id.not_in(answered),
                    or_(taken.c.taken.is_(None), taken.c.taken < settings.annotators_per_unit))
             .order_by(func.coalesce(taken.c.taken, 0).desc(), Unit.id))
    if queue.passed is not None:
        passed = queue.passed(campaign_id)
        query = query.where(Unit.id.not_in(passed.where(passed.selected_columns[1] == annotator_id)
                                           .with_only_columns(passed.selected_columns[0])))
    return query


@one_writer_at_a_time
def reserve_next(db: Session, queue: Queue, campaign_id: int, annotator_id: int, candidates, now: datetime,
                 settings: AnnotationSettings = ANNOTATION):
    """The first of `open_units` held for this annotator in the campaign; None when none is left for them.

    A unit they already hold in it comes back (a reloaded page)."""
    lock(db, queue, None, now)
    held = current_reservation(db, queue, annotator_id, now, campaign_id)
    if held is not None:
        db.commit()
        return held
    query = open_units(queue, campaign_id, annotator_id, candidates, now, settings)
    for offset in itertools.count(0, BATCH):
        unit_ids = db.scalars(query.offset(offset).limit(BATCH)).all()
        if not unit_ids:
            db.commit()
            return None
        for unit_id in unit_ids:
            db.execute(select(Unit.id).where(Unit.id == unit_id).with_for_update())
            if free_slot(db, queue, campaign_id, unit_id, annotator_id, now, settings.annotators_per_unit):
                reservation = queue.reservation(campaign_id=campaign_id, unit_id=unit_id, annotator_id=annotator_id,
                                                expires_at=now + timedelta(minutes=settings.reservation_minutes))
                if hasattr(reservation, "handed_at"):   # the unit task times each answer from here
                    reservation.handed_at = now
                db.add(reservation)
                db.commit()
                return reservation


def check_held(db: Session, queue: Queue, unit_id: int, annotator_id: int, now: datetime):
    """This annotator's hold on `unit_id`; TaskError (409) unless they hold it now: people answer what the
    queue hands them, so nobody picks the units they label, and no unit gets more than its annotators."""
    held = held_for(db, queue, unit_id, annotator_id, now)
    if held is None:
        raise TaskError(f"Unit {unit_id} is not held for you in the {queue.name} task (or your hold on it ran "
                        "out): your next unit is waiting.", 409)
    return held


@contextmanager
def filling_a_slot(db: Session, replayed: str):
    """Commit what the block writes, or none of it: a TaskError rolls back, and so does an IntegrityError
    (the unique constraints meeting a replayed form), answered as a 409 saying `replayed`."""
    try:
        yield
        db.commit()
    except TaskError:
        db.rollback()
        raise
    except IntegrityError:
        db.rollback()
        raise TaskError(replayed, 409) from None
