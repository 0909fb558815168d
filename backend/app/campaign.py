"""The admins' choices for the annotation campaign (what annotators see, the task's instructions), and
what they let each account see.

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

from backend.app.errors import TaskError
from backend.app.reservations import utcnow
from backend.db.models import Annotation, Annotator, CampaignSetting

RESULTS_OPEN = "results_open"       # True: annotators see every unit's results; absent or False: blind
INSTRUCTIONS = "instructions"       # {question key: {"instructions": ..., "example": ...}}, edited by admins
INSTRUCTION_MAX = 2000


@dataclass(frozen=True)
class Question:
    """One question of the unit task, as the start page explains it (paper 4.1's three questions)."""

    key: str
    question: str
    instructions: str
    example: str


QUESTIONS = (
    Question("object", "Is one object present in many of the images?",
             "The bright regions are where the unit fires most. Answer yes when one kind of object shows in many "
             "of them, no when nothing recurs, texture when what recurs is a texture or stuff (grass, water, sky) "
             "rather than an object.",
             "Most regions show a dog's head, a few show grass: yes. Regions of ripples and foam: texture."),
    Question("name", "Which object?",
             "For a yes, name the object: pick from the list as you type, or type a new name if none fits.",
             "Heads, legs and tails of dogs: dog (not 'animal', not 'fur')."),
    Question("marks", "Which images show it?",
             "Mark every image whose bright region shows the object you named; leave the others. The marks give "
             "the unit's precision, so mark carefully rather than fast.",
             "40 of the 60 regions show a dog: mark those 40 (A marks all, then click the 20 others away)."),
)


def _setting(db: Session, name: str):
    return db.scalar(select(CampaignSetting.value).where(CampaignSetting.name == name))


def _save_setting(db: Session, name: str, value, admin_id: int) -> None:
    """Store one setting, committed."""
    for _attempt in range(2):      # two admins saving at once: the second insert fails, then it updates
        row = db.get(CampaignSetting, name)
        if row is None:
            db.add(CampaignSetting(name=name, value=value, updated_by=admin_id))
        else:
            row.value, row.updated_at, row.updated_by = value, utcnow(), admin_id
        try:
            db.commit()
            return
        except IntegrityError:
            db.rollback()
    raise RuntimeError(f"the campaign setting {name} could not be saved")


def results_open(db: Session) -> bool:
    return _setting(db, RESULTS_OPEN) is True


def set_results_open(db: Session, is_open: bool, admin_id: int) -> None:
    """Open (or close again) every unit's results to annotators, committed."""
    _save_setting(db, RESULTS_OPEN, is_open, admin_id)


def instructions(db: Session) -> list[Question]:
    """The unit task's questions with the admins' instructions and examples (the defaults where they wrote none)."""
    edited = _setting(db, INSTRUCTIONS) or {}
    return [Question(q.key, q.question, (edited.get(q.key) or {}).get("instructions") or q.instructions,
                     (edited.get(q.key) or {}).get("example") or q.example) for q in QUESTIONS]


def set_instructions(db: Session, texts: dict[str, dict[str, str]], admin_id: int) -> None:
    """Store the instructions and examples (question key -> {"instructions", "example"}); a blank one
    goes back to the default."""
    cleaned = {}
    for q in QUESTIONS:
        given = texts.get(q.key, {})
        cleaned[q.key] = {part: given.get(part, "").strip() for part in ("instructions", "example")}
        if any(len(text) > INSTRUCTION_MAX for text in cleaned[q.key].values()):
            raise TaskError(f"Instructions and examples are at most {INSTRUCTION_MAX} characters each.")
    _save_setting(db, INSTRUCTIONS, cleaned, admin_id)


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
