"""Annotation campaigns, and the admins' global choices (whether every unit's results are open, the default
instructions), and what they let each account see.

A campaign puts one run's layer before annotators: its name, judges per unit, blind or not, its own
instructions, who may take part (everyone or named annotators), open or closed. Only open campaigns
hand out units, so a newly published run enters no queue until an admin puts it in one. Each run has
at most one default campaign: the one its results and exports show when none is named.

Annotators are blind by default: until they have answered a unit, nothing about other people's answers
(verdict, precision, agreement) or its automatic labels reaches them, so that their answers are
independent judgements (Table 1 and the agreement depend on it). Admins see everything, and choose
when annotators may see the results of every unit."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.app.errors import TaskError
from backend.app.gold import check_gold_rate, excluded_ids, gold_unit_ids, is_excluded
from backend.app.reservations import utcnow
from backend.db.models import (Annotation, Annotator, Campaign, CampaignExclusion, CampaignMember, CampaignSetting,
                               Layer, Run, Unit, UnitImage, UnitSettlement)
from model.settings import ANNOTATION, AnnotationSettings

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


def instructions(db: Session, campaign: Campaign | None = None) -> list[Question]:
    """The unit task's questions with the instructions and examples: the campaign's own, else the admins'
    global ones, else the defaults."""
    edited = _setting(db, INSTRUCTIONS) or {}
    own = campaign.instructions if campaign is not None else {}

    def text(key: str, part: str, default: str) -> str:
        return (own.get(key) or {}).get(part) or (edited.get(key) or {}).get(part) or default
    return [Question(q.key, q.question, text(q.key, "instructions", q.instructions), text(q.key, "example", q.example))
            for q in QUESTIONS]


def cleaned_instructions(texts: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Instructions and examples (question key -> {"instructions", "example"}) trimmed and checked; a blank
    one falls back to the global (or default) text."""
    cleaned = {}
    for q in QUESTIONS:
        given = texts.get(q.key, {})
        cleaned[q.key] = {part: str(given.get(part, "")).strip() for part in ("instructions", "example")}
        if any(len(text) > INSTRUCTION_MAX for text in cleaned[q.key].values()):
            raise TaskError(f"instructions: instructions and examples are at most {INSTRUCTION_MAX} characters each.")
    return cleaned


def set_instructions(db: Session, texts: dict[str, dict[str, str]], admin_id: int) -> None:
    """Store the global instructions and examples; a blank one goes back to the default."""
    _save_setting(db, INSTRUCTIONS, cleaned_instructions(texts), admin_id)


# --- Campaigns.

NAME_MAX = 200
JUDGES_MAX = 20


@dataclass(frozen=True)
class CampaignFields:
    """What an admin gives for a campaign (the form, the API's body, the CLI's flags)."""

    name: str
    run_id: int
    layer: str = "conv5"
    judges: int = ANNOTATION.annotators_per_unit
    blind: bool = True
    instructions: dict | None = None          # question key -> {"instructions", "example"}; None: keep / none
    everyone: bool = True
    participants: tuple[str, ...] = ()       # annotator names, when not everyone
    open: bool = False
    gold_rate: float = 0.0                   # share of each annotator's units that are gold (0 to 0.5)
    adaptive: bool = False                   # two judges, a third only where they disagree or one is doubtful on gold


def campaign_annotation_settings(campaign: Campaign, hold_minutes: int | None = None,
                                 settings: AnnotationSettings = ANNOTATION) -> AnnotationSettings:
    """The queue's settings for `campaign`: its judges per unit, and holds of `hold_minutes` when given."""
    changed = {"annotators_per_unit": campaign.judges}
    if hold_minutes is not None:
        changed["reservation_minutes"] = hold_minutes
    return replace(settings, **changed)


def campaign_units(campaign: Campaign):
    """A select of the campaign's units: its run's layer's units with top images."""
    return (select(Unit.id).join(Layer, Unit.layer_id == Layer.id)
            .where(Layer.run_id == campaign.run_id, Layer.name == campaign.layer,
                   exists().where(UnitImage.unit_id == Unit.id)))


def units_to_label(campaign: Campaign):
    """The unit task's candidates in `campaign`: its units, but for those an admin has settled there and its
    gold units (handed out apart, at the gold rate: backend/app/gold.py)."""
    return campaign_units(campaign).where(
        Unit.id.not_in(select(UnitSettlement.unit_id).where(UnitSettlement.campaign_id == campaign.id)),
        Unit.id.not_in(gold_unit_ids(campaign.id)))


def may_take_part(db: Session, campaign: Campaign, user: Annotator) -> bool:
    return ((campaign.everyone or db.get(CampaignMember, (campaign.id, user.id)) is not None)
            and not is_excluded(db, campaign.id, user.id))


def open_campaigns(db: Session, user: Annotator) -> list[Campaign]:
    """The open campaigns `user` may take part in (not excluded from), oldest first."""
    member = select(CampaignMember.campaign_id).where(CampaignMember.annotator_id == user.id)
    excluded = select(CampaignExclusion.campaign_id).where(CampaignExclusion.annotator_id == user.id)
    return list(db.scalars(select(Campaign).where(Campaign.is_open, (Campaign.everyone | Campaign.id.in_(member)),
                                                  Campaign.id.not_in(excluded))
                           .order_by(Campaign.id)))


def joinable_campaign(db: Session, user: Annotator, campaign_id: int) -> Campaign:
    """The campaign `user` asked to work in; TaskError unless it exists, is open and they may take part."""
    campaign = db.get(Campaign, campaign_id)
    if campaign is None:
        raise TaskError(f"campaign: there is no campaign {campaign_id}.", 404)
    if not campaign.is_open:
        raise TaskError(f"campaign: '{campaign.name}' is closed.", 409)
    if not may_take_part(db, campaign, user):
        raise TaskError(f"campaign: you are not among '{campaign.name}''s annotators.", 403)
    return campaign


def default_campaign(db: Session, run_id: int) -> Campaign | None:
    return db.scalar(select(Campaign).where(Campaign.run_id == run_id, Campaign.is_default))


def run_campaign(db: Session, run: Run, campaign_id: int | None) -> Campaign | None:
    """The campaign a results page or export of `run` shows: `campaign_id` (one of the run's), else the run's
    default; None when the run has no campaign (no answers to show)."""
    if campaign_id is None:
        return default_campaign(db, run.id)
    campaign = db.get(Campaign, campaign_id)
    if campaign is None or campaign.run_id != run.id:
        raise TaskError(f"campaign: run {run.id} has no campaign {campaign_id}.", 404)
    return campaign


def run_campaigns(db: Session, run_id: int) -> list[Campaign]:
    return list(db.scalars(select(Campaign).where(Campaign.run_id == run_id).order_by(Campaign.id)))


def campaign_size(db: Session, campaign: Campaign) -> int:
    return db.scalar(select(func.count()).select_from(campaign_units(campaign).subquery()))


def complete_units(db: Session, campaign: Campaign) -> int:
    """The campaign's units with all their judges' answers (adaptive: two, an upper bound where they disagree) or settled there;
    gold units and excluded annotators' answers aside."""
    answered = (select(Annotation.unit_id).where(Annotation.campaign_id == campaign.id,
                                                 Annotation.annotator_id.not_in(excluded_ids(campaign.id)),
                                                 Annotation.unit_id.not_in(gold_unit_ids(campaign.id)))
                .group_by(Annotation.unit_id).having(func.count() >= (min(2, campaign.judges) if campaign.adaptive
                                                                      else campaign.judges)))
    settled = select(UnitSettlement.unit_id).where(UnitSettlement.campaign_id == campaign.id)
    return db.scalar(select(func.count()).select_from(
        campaign_units(campaign).where(Unit.id.in_(answered) | Unit.id.in_(settled)).subquery()))


def _checked(db: Session, fields: CampaignFields) -> tuple[Run, list[Annotator]]:
    """The run and participants `fields` name; TaskError (422) naming the first bad field."""
    if not fields.name.strip() or len(fields.name.strip()) > NAME_MAX:
        raise TaskError(f"name: a campaign's name is 1-{NAME_MAX} characters.")
    run = db.get(Run, fields.run_id)
    if run is None:
        raise TaskError(f"run_id: there is no run {fields.run_id}.")
    layers = db.scalars(select(Layer.name).where(Layer.run_id == run.id).order_by(Layer.name)).all()
    if fields.layer not in layers:
        raise TaskError(f"layer: run {run.id} has no layer {fields.layer!r} "
                        f"(its layers: {', '.join(layers) or 'none yet: extract its units first'}).")
    if not 1 <= fields.judges <= JUDGES_MAX:
        raise TaskError(f"judges: judges per unit is a number from 1 to {JUDGES_MAX}.")
    check_gold_rate(fields.gold_rate)
    names = sorted({name.strip() for name in fields.participants if name.strip()})
    people = list(db.scalars(select(Annotator).where(Annotator.name.in_(names)))) if names else []
    unknown = sorted(set(names) - {person.name for person in people})
    if unknown:
        raise TaskError(f"participants: no account is called {', '.join(unknown)}.")
    if not fields.everyone and not people:
        raise TaskError("participants: name the annotators who may take part, or open it to everyone.")
    return run, people


def create_campaign(db: Session, fields: CampaignFields) -> Campaign:
    """A new campaign, committed; the run's default when it has none yet."""
    run, people = _checked(db, fields)
    campaign = Campaign(name=fields.name.strip(), run_id=run.id, layer=fields.layer, judges=fields.judges,
                        blind=fields.blind, instructions=cleaned_instructions(fields.instructions or {}),
                        everyone=fields.everyone, is_open=fields.open,
                        is_default=default_campaign(db, run.id) is None, gold_rate=fields.gold_rate,
                        adaptive=fields.adaptive)
    db.add(campaign)
    db.flush()
    db.add_all(CampaignMember(campaign_id=campaign.id, annotator_id=person.id) for person in people)
    db.commit()
    return campaign


def run_default_campaign(db: Session, run: Run) -> tuple[Campaign, bool]:
    """The run's default campaign, and whether it is new: one is created, open, for its conv5 (else its first
    layer) when it has none (`ambient demo`: the demo ends with units to annotate)."""
    existing = default_campaign(db, run.id)
    if existing is not None:
        return existing, False
    layers = db.scalars(select(Layer.name).where(Layer.run_id == run.id).order_by(Layer.name)).all()
    layer = "conv5" if "conv5" in layers else (layers[0] if layers else "conv5")
    return create_campaign(db, CampaignFields(name=f"{run.name} {layer}"[:NAME_MAX], run_id=run.id, layer=layer,
                                              open=True)), True


def _campaign(db: Session, campaign_id: int) -> Campaign:
    campaign = db.get(Campaign, campaign_id)
    if campaign is None:
        raise TaskError(f"There is no campaign {campaign_id}.", 404)
    return campaign


def edit_campaign(db: Session, campaign_id: int, fields: CampaignFields) -> Campaign:
    """Change a campaign's name, judges, blindness, instructions and participants, committed. Its run and
    layer stay: its answers are about those units."""
    campaign = _campaign(db, campaign_id)
    if (fields.run_id, fields.layer) != (campaign.run_id, campaign.layer):
        raise TaskError("run_id: a campaign's run and layer stay as they are (its answers are about those units): "
                        "create another campaign.")
    _run, people = _checked(db, fields)
    campaign.name, campaign.judges, campaign.blind = fields.name.strip(), fields.judges, fields.blind
    campaign.everyone, campaign.gold_rate, campaign.adaptive = fields.everyone, fields.gold_rate, fields.adaptive
    if fields.instructions is not None:
        campaign.instructions = cleaned_instructions(fields.instructions)
    db.query(CampaignMember).filter(CampaignMember.campaign_id == campaign.id).delete()
    db.add_all(CampaignMember(campaign_id=campaign.id, annotator_id=person.id) for person in people)
    set_open(db, campaign, fields.open)
    return campaign


def set_open(db: Session, campaign: Campaign | int, is_open: bool) -> Campaign:
    """Open or close a campaign, committed. Closing keeps its answers; its units leave the queue."""
    campaign = _campaign(db, campaign) if isinstance(campaign, int) else campaign
    if campaign.is_open != is_open:
        campaign.is_open, campaign.closed_at = is_open, None if is_open else utcnow()
    db.commit()
    return campaign


def make_default(db: Session, campaign_id: int) -> Campaign:
    """Make a campaign its run's default (the one its results page shows), committed."""
    campaign = _campaign(db, campaign_id)
    db.execute(update(Campaign).where(Campaign.run_id == campaign.run_id).values(is_default=False))
    campaign.is_default = True
    db.commit()
    return campaign


def participants(db: Session, campaign: Campaign) -> list[str]:
    return list(db.scalars(select(Annotator.name).join(CampaignMember, CampaignMember.annotator_id == Annotator.id)
                           .where(CampaignMember.campaign_id == campaign.id).order_by(Annotator.name)))


@dataclass(frozen=True)
class Visibility:
    """Which units' results (other people's answers, verdict, automatic labels) an account may see."""

    everything: bool
    answered: frozenset[int] = frozenset()     # when not everything: the units whose results it may see

    def shows(self, unit_id: int) -> bool:
        return self.everything or unit_id in self.answered


def visibility(db: Session, user: Annotator, undo_minutes: int, now: datetime | None = None) -> Visibility:
    """What `user` may see: admins everything; annotators everything once an admin opened the results,
    before that the units of the campaigns open to them that are not blind, and the units they have answered,
    but for their latest answer while they can still undo it (seeing the verdict, then undoing and answering
    again, would make that answer a copy)."""
    if user.is_admin or results_open(db):
        return Visibility(everything=True)
    seen = set()
    for campaign in open_campaigns(db, user):
        if not campaign.blind:
            seen.update(db.scalars(campaign_units(campaign)))
    answers = db.execute(select(Annotation.unit_id, Annotation.created_at)
                         .where(Annotation.annotator_id == user.id)
                         .order_by(Annotation.created_at.desc(), Annotation.id.desc())).all()
    undoable_since = (now or utcnow()) - timedelta(minutes=undo_minutes)
    if answers and _aware(answers[0].created_at) > undoable_since:
        answers = answers[1:]
    return Visibility(everything=False, answered=frozenset(seen | {unit_id for unit_id, _ in answers}))


def _aware(moment: datetime) -> datetime:
    # SQLite hands DateTime(timezone=True) back without its zone; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
