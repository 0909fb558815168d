"""The admins' choices for the annotation campaign, and what they let each account see.

Annotators are blind by default: until they have answered a unit, nothing about other people's answers
(verdict, precision, agreement) or its automatic labels reaches them, so that their answers are
independent judgements (Table 1 and the agreement depend on it). Admins see everything, and choose
when annotators may see the results of every unit."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.app.reservations import utcnow
from backend.db.models import Annotation, Annotator, CampaignSetting

RESULTS_OPEN = "results_open"       # True: annotators see every unit's results; absent or False: blind


def results_open(db: Session) -> bool:
    return db.scalar(select(CampaignSetting.value).where(CampaignSetting.name == RESULTS_OPEN)) is True


def set_results_open(db: Session, is_open: bool, admin_id: int) -> None:
    """Open (or close again) every unit's results to annotators, committed."""
    for _attempt in range(2):      # two admins saving at once: the second insert fails, then it updates
        row = db.get(CampaignSetting, RESULTS_OPEN)
        if row is None:
            db.add(CampaignSetting(name=RESULTS_OPEN, value=is_open, updated_by=admin_id))
        else:
            row.value, row.updated_at, row.updated_by = is_open, utcnow(), admin_id
        try:
            db.commit()
            return
        except IntegrityError:
            db.rollback()
    raise RuntimeError("the campaign setting could not be saved")


@dataclass(frozen=True)
class Visibility:
    """Which units' results (other people's answers, verdict, automatic labels) an account may see."""

    everything: bool
    answered: frozenset[int] = frozenset()     # when not everything: the units whose results it may see

    def shows(self, unit_id: int) -> bool:
        return self.everything or unit_id in self.answered


def visibility(db: Session, user: Annotator, undo_minutes: int, now: datetime | None = None) -> Visibility:
    """What `user` may see: admins everything; annotators everything once an admin opened the results,
    before that the units they have answered, but for their latest answer while they can still undo it
    (seeing the verdict, then undoing and answering again, would make that answer a copy)."""
    if user.is_admin or results_open(db):
        return Visibility(everything=True)
    answers = db.execute(select(Annotation.unit_id, Annotation.created_at)
                         .where(Annotation.annotator_id == user.id)
                         .order_by(Annotation.created_at.desc(), Annotation.id.desc())).all()
    undoable_since = (now or utcnow()) - timedelta(minutes=undo_minutes)
    if answers and _aware(answers[0].created_at) > undoable_since:
        answers = answers[1:]
    return Visibility(everything=False, answered=frozenset(unit_id for unit_id, _ in answers))


def _aware(moment: datetime) -> datetime:
    # SQLite hands DateTime(timezone=True) back without its zone; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
