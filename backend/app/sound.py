"""The sound task: its queue of each campaign's detector units (backend/app/reservations.py) and the judgements."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, defer

from annotation.aggregate import AUDIBLE
from backend.app.errors import TaskError
from backend.app.reservations import (Queue, aware, check_held, current_reservation, filling_a_slot, held_for, lock,
                                      one_writer_at_a_time, open_units, reserve_next, utcnow)
from backend.app.campaign import campaign_annotation_settings
from backend.app.results import detector_units, maybe_detectors
from backend.db.models import Annotator, Campaign, Frame, SoundJudgement, SoundReservation, Unit, UnitImage
from model.settings import ANNOTATION, AnnotationSettings


def _judges(campaign_id: int):
    """Who judged a unit in the campaign, by their judgement of its first clip: judgements come all or none
    for a unit's top clips, so this is one row per judge (and 30 times fewer rows to count than all the clips)."""
    return (select(UnitImage.unit_id, SoundJudgement.annotator_id)
            .join(SoundJudgement, SoundJudgement.unit_image_id == UnitImage.id)
            .where(UnitImage.rank == 0, SoundJudgement.campaign_id == campaign_id))


SOUND_QUEUE = Queue("sound", SoundReservation, _judges)
DETECTOR_BATCH = 5      # candidates whose verdicts are worked out at a time: each reads its answers and marks
# Units whose top images are still images (a pool folder of images, model/data/pool.py): no clips, no sound task.
UNITS_WITHOUT_CLIPS = (select(UnitImage.unit_id).join(Frame, UnitImage.frame_id == Frame.id)
                       .where(Frame.clip_path.is_(None)))


def sound_clips(db: Session, unit_id: int, settings: AnnotationSettings = ANNOTATION) -> list[UnitImage]:
    """The unit's top images whose clips the sound task plays (without their JPEGs: pages link them)."""
    return list(db.scalars(select(UnitImage).options(defer(UnitImage.masked_jpeg))
                           .where(UnitImage.unit_id == unit_id).order_by(UnitImage.rank)
                           .limit(settings.sound_clips_per_unit)))


def detector_category(db: Session, unit_id: int, campaign: Campaign) -> str:
    """The category the unit detects in the campaign; TaskError (404) when it is not a detector (yet)."""
    if db.scalar(UNITS_WITHOUT_CLIPS.where(UnitImage.unit_id == unit_id).limit(1)) is not None:
        raise TaskError(f"Unit {unit_id}'s top images are still images with no clips, so it has no sound task.", 404)
    category = detector_units(db, [unit_id], campaign).get(unit_id)
    if category is None:
        raise TaskError(f"Unit {unit_id} is not a detector (yet), so it has no sound task.", 404)
    return category


def reserve_next_sound_unit(db: Session, annotator_id: int, campaign: Campaign, now: datetime | None = None,
                            hold_minutes: int | None = None) -> SoundReservation | None:
    """A detector unit of the campaign this annotator has not judged there, held for them; None when none is
    left for them.

    Which units are detectors is worked out before the writer lock, a few candidates at a time: it is
    the slow part, and it depends on the units' answers, which the sound task does not write."""
    now = now or utcnow()
    settings = campaign_annotation_settings(campaign, hold_minutes)
    held = current_reservation(db, SOUND_QUEUE, annotator_id, now, campaign.id)
    if held is not None:
        return held
    candidates = open_units(SOUND_QUEUE, campaign.id, annotator_id, maybe_detectors(campaign), now, settings) \
        .where(Unit.id.not_in(UNITS_WITHOUT_CLIPS))
    for offset in itertools.count(0, DETECTOR_BATCH):
        unit_ids = db.scalars(candidates.offset(offset).limit(DETECTOR_BATCH)).all()
        if not unit_ids:
            return None
        detectors = sorted(detector_units(db, unit_ids, campaign))
        if detectors:
            reservation = reserve_next(db, SOUND_QUEUE, campaign.id, annotator_id, detectors, now, settings)
            if reservation is not None:
                return reservation


def submit_sound_judgements(db: Session, annotator_id: int, unit_id: int, judgements: dict[int, str],
                            now: datetime | None = None, settings: AnnotationSettings = ANNOTATION) -> Judged:
    """Store one annotator's audibility judgement of each of the unit's clips, all or none; the unit
    must be a detector held for them (in the campaign that handed it)."""
    now = now or utcnow()
    held = check_held(db, SOUND_QUEUE, unit_id, annotator_id, now)
    detector_category(db, unit_id, db.get(Campaign, held.campaign_id))
    clips = {image.id for image in sound_clips(db, unit_id, settings)}
    foreign = sorted(set(judgements) - clips)
    if foreign:
        raise TaskError(f"Clips {foreign[:10]} are not among unit {unit_id}'s top clips.")
    bad = sorted({value[:20] for value in judgements.values() if value not in AUDIBLE})
    if bad:
        raise TaskError(f"Each judgement must be one of {', '.join(AUDIBLE)}; got {bad}.")
    missing = len(clips) - len(judgements)
    if missing:
        raise TaskError(f"{missing} of the {len(clips)} clips are not judged yet.")
    return _store_judgements(db, annotator_id, unit_id, judgements, now)


@dataclass(frozen=True)
class Judged:
    judged: int           # clips judged
    campaign_id: int


@one_writer_at_a_time
def _store_judgements(db: Session, annotator_id: int, unit_id: int, judgements: dict[int, str], now: datetime) -> Judged:
    # Under the writer lock only what must be: the checks of the slot and the writes.
    lock(db, SOUND_QUEUE, unit_id, now)
    twice = f"You have already judged unit {unit_id}'s clips (was the form sent twice?)."
    with filling_a_slot(db, twice):
        held = held_for(db, SOUND_QUEUE, unit_id, annotator_id, now)
        judged = (select(SoundJudgement.id).join(UnitImage, SoundJudgement.unit_image_id == UnitImage.id)
                  .where(UnitImage.unit_id == unit_id, SoundJudgement.annotator_id == annotator_id))
        if db.scalar((judged if held is None else judged.where(SoundJudgement.campaign_id == held.campaign_id))
                     .limit(1)):
            raise TaskError(twice, 409)
        held = check_held(db, SOUND_QUEUE, unit_id, annotator_id, now)
        db.execute(insert(SoundJudgement), [{"campaign_id": held.campaign_id, "annotator_id": annotator_id,
                                             "unit_image_id": image_id, "audible": audible}
                                            for image_id, audible in judgements.items()])
        db.delete(held)
    return Judged(len(judgements), held.campaign_id)


def has_sound_judgements(db: Session, annotator_id: int) -> bool:
    return db.scalar(select(SoundJudgement.id).where(SoundJudgement.annotator_id == annotator_id).limit(1)) is not None


@dataclass(frozen=True)
class WithdrawnJudgements:
    """A unit's clip judgements taken back by undo: what its sound page fills in again."""
    unit_id: int
    judgements: dict[int, str]          # unit image id -> yes, no or unsure


@one_writer_at_a_time
def undo_last_judgements(db: Session, annotator_id: int, undo_minutes: int, now: datetime | None = None,
                         hold_minutes: int = ANNOTATION.reservation_minutes) -> WithdrawnJudgements:
    """Delete this annotator's latest unit's clip judgements and hold the unit for them again.

    The unit task's rules (backend/app/units.py): one step back only (their last undo, in either task,
    came before these judgements), within `undo_minutes`, while the unit still lacks judges."""
    now = now or utcnow()
    lock(db, SOUND_QUEUE, None, now)
    last = db.execute(select(UnitImage.unit_id, SoundJudgement.campaign_id, SoundJudgement.created_at)
                      .join(UnitImage, SoundJudgement.unit_image_id == UnitImage.id)
                      .where(SoundJudgement.annotator_id == annotator_id)
                      .order_by(SoundJudgement.created_at.desc(), SoundJudgement.id.desc()).limit(1)).first()
    last_undo = db.scalar(select(Annotator.last_undo_at).where(Annotator.id == annotator_id))
    problem = None
    if last is None:
        problem = "You have no sound judgements to undo."
    elif aware(last.created_at) < now - timedelta(minutes=undo_minutes):
        problem = f"Your latest judgements (unit {last.unit_id}) are over {undo_minutes} minutes old: they stand."
    elif last_undo is not None and aware(last.created_at) <= aware(last_undo):
        problem = "Undo goes back one answer only: judge the unit you are holding."
    elif db.scalar(select(func.count()).select_from(_judges(last.campaign_id).where(UnitImage.unit_id == last.unit_id)
                                                    .subquery())) \
            >= db.scalar(select(Campaign.judges).where(Campaign.id == last.campaign_id)):
        problem = f"Unit {last.unit_id} has all its judges now, so your judgements stand."
    if problem is not None:
        db.rollback()
        raise TaskError(problem, 409)
    rows = db.execute(select(SoundJudgement.id, SoundJudgement.unit_image_id, SoundJudgement.audible)
                      .join(UnitImage, SoundJudgement.unit_image_id == UnitImage.id)
                      .where(SoundJudgement.campaign_id == last.campaign_id, UnitImage.unit_id == last.unit_id,
                             SoundJudgement.annotator_id == annotator_id)).all()
    db.execute(delete(SoundJudgement).where(SoundJudgement.id.in_([row.id for row in rows])))
    db.execute(update(Annotator).where(Annotator.id == annotator_id).values(last_undo_at=now))
    # Whatever else they held goes back to the queue: they are returning to this unit.
    db.execute(delete(SoundReservation).where(SoundReservation.annotator_id == annotator_id))
    db.add(SoundReservation(campaign_id=last.campaign_id, unit_id=last.unit_id, annotator_id=annotator_id,
                            expires_at=now + timedelta(minutes=hold_minutes)))
    db.commit()
    return WithdrawnJudgements(last.unit_id, {row.unit_image_id: row.audible for row in rows})
