"""The campaign pages for admins: the campaigns (create, open, close, edit, make a run's default), whether
annotators may see every unit's results (blind by default), and the default instructions and examples the
annotators' start page gives for each question (a campaign's own override them)."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from starlette.datastructures import FormData
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.campaign import (QUESTIONS, CampaignFields, campaign_size, complete_units, create_campaign,
                                  edit_campaign, instructions, make_default, participants, results_open,
                                  set_instructions, set_open, set_results_open)
from backend.app.deps import admin_user, check_csrf, flash, form_fields, get_db, reauthenticated, render
from backend.app.errors import TaskError
from backend.app.gold import exclude_annotator, include_annotator
from backend.app.results import annotators_report, run_report
from annotation.consensus import CONSENSUS_METHODS
from backend.db.models import Annotator, Campaign, Layer, Run
from model.settings import ANNOTATION

router = APIRouter(include_in_schema=False)


@router.get("/admin/campaign")
def campaign(request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    return render(request, "campaign.html", user=user, results_open=results_open(db), questions=instructions(db))


@router.post("/admin/campaign/results", dependencies=[Depends(check_csrf)])
def open_or_close_results(request: Request, is_open: bool = Form(False), your_password: str = Form("", max_length=1000),
                          user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Opening needs the acting admin's own password: with a stolen session alone, every annotator (and their
    read tokens) would see the verdicts and automatic labels before answering. Closing is always safe."""
    if is_open and not reauthenticated(request, user, your_password):
        raise HTTPException(403, "Enter your own password to open the results to annotators.")
    set_results_open(db, is_open, user.id)
    flash(request, "Annotators now see every unit's results." if is_open else
          "Annotators are blind again: each sees a unit's results only after answering it.")
    return RedirectResponse("/admin/campaign", status_code=303)


@router.post("/admin/campaign/instructions", dependencies=[Depends(check_csrf)])
def save_instructions(request: Request, form: FormData = Depends(form_fields), user: Annotator = Depends(admin_user),
                      db: Session = Depends(get_db)):
    texts = {q.key: {part: str(form.get(f"{q.key}_{part}", "")) for part in ("instructions", "example")}
             for q in QUESTIONS}
    set_instructions(db, texts, user.id)
    flash(request, "The instructions are saved: annotators see them on the Label units page.")
    return RedirectResponse("/admin/campaign", status_code=303)


# --- Campaigns: each puts one run's layer before annotators.

def _fields(form: FormData) -> CampaignFields:
    """A campaign's form as CampaignFields; a number that is not one is refused naming its field."""
    numbers = {}
    for field in ("run_id", "judges"):
        try:
            numbers[field] = int(str(form.get(field, "")).strip())
        except ValueError:
            raise TaskError(f"{field}: give a whole number.") from None
    try:
        gold_rate = float(str(form.get("gold_rate", "0")).strip() or "0")
    except ValueError:
        raise TaskError("gold_rate: give a share from 0 to 0.5, e.g. 0.1.") from None
    return CampaignFields(
        name=str(form.get("name", "")), run_id=numbers["run_id"], layer=str(form.get("layer", "")).strip(),
        judges=numbers["judges"], blind=form.get("blind") == "on",
        instructions={q.key: {part: str(form.get(f"{q.key}_{part}", "")) for part in ("instructions", "example")}
                      for q in QUESTIONS},
        everyone=form.get("everyone") == "on",
        participants=tuple(name for name in str(form.get("participants", "")).replace(",", " ").split()),
        open=form.get("open") == "on", gold_rate=gold_rate, adaptive=form.get("adaptive") == "on")


def _form_page(request: Request, user: Annotator, db: Session, campaign: Campaign | None, values: dict,
               error: str | None = None):
    runs = db.scalars(select(Run).order_by(Run.id)).all()
    layers = {run.id: db.scalars(select(Layer.name).where(Layer.run_id == run.id).order_by(Layer.name)).all()
              for run in runs}
    # Adaptive judging's figure: how many answers the campaign's complete units took.
    judgments = run_report(db, campaign.run, campaign).judgments_per_unit if campaign is not None else None
    return render(request, "campaign_form.html", user=user, campaign=campaign, values=values, runs=runs, layers=layers,
                  questions=QUESTIONS, error=error, judgments_per_unit=judgments, status_code=422 if error else 200)


def _values(campaign: Campaign | None, db: Session, run_id: int | None = None) -> dict:
    if campaign is None:
        return {"name": "", "run_id": run_id, "layer": "conv5", "judges": ANNOTATION.annotators_per_unit,
                "blind": True, "everyone": True, "participants": "", "open": True, "instructions": {},
                "gold_rate": 0.0, "adaptive": False}
    return {"name": campaign.name, "run_id": campaign.run_id, "layer": campaign.layer, "judges": campaign.judges,
            "blind": campaign.blind, "everyone": campaign.everyone, "participants": " ".join(participants(db, campaign)),
            "open": campaign.is_open, "instructions": campaign.instructions, "gold_rate": campaign.gold_rate,
            "adaptive": campaign.adaptive}


def _posted_values(form: FormData) -> dict:
    return {"name": form.get("name", ""), "run_id": _int_or_none(form.get("run_id")), "layer": form.get("layer", ""),
            "judges": form.get("judges", ""), "blind": form.get("blind") == "on", "everyone": form.get("everyone") == "on",
            "participants": form.get("participants", ""), "open": form.get("open") == "on",
            "gold_rate": form.get("gold_rate", ""), "adaptive": form.get("adaptive") == "on",
            "instructions": {q.key: {part: form.get(f"{q.key}_{part}", "") for part in ("instructions", "example")}
                             for q in QUESTIONS}}


def _int_or_none(value) -> int | None:
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None


@router.get("/admin/campaigns")
def campaigns(request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    rows = [(c, campaign_size(db, c), complete_units(db, c)) for c in db.scalars(select(Campaign).order_by(Campaign.id))]
    return render(request, "campaigns.html", user=user, rows=rows)


@router.get("/admin/campaigns/new")
def new_campaign_form(request: Request, run: int | None = Query(None), user: Annotator = Depends(admin_user),
                      db: Session = Depends(get_db)):
    """The form for a new campaign (`?run=ID`: of that run, as the job page's "Label its units" link asks)."""
    return _form_page(request, user, db, None, _values(None, db, run))


def _check_blindness(request: Request, user: Annotator, form: FormData, was_blind: bool) -> None:
    # As for opening the results: with a stolen session alone, nobody may show annotators the verdicts.
    if was_blind and form.get("blind") != "on" and not reauthenticated(request, user, str(form.get("your_password", ""))):
        raise TaskError("blind: enter your own password to show annotators this campaign's results.", 403)


@router.post("/admin/campaigns", dependencies=[Depends(check_csrf)])
def create(request: Request, form: FormData = Depends(form_fields), user: Annotator = Depends(admin_user),
           db: Session = Depends(get_db)):
    try:
        _check_blindness(request, user, form, was_blind=True)
        campaign = create_campaign(db, _fields(form))
    except TaskError as error:
        db.rollback()
        return _form_page(request, user, db, None, _posted_values(form), error.message)
    flash(request, f"Campaign '{campaign.name}' created" + (": it is open to annotators." if campaign.is_open else
                                                           " (closed: open it when annotators may start)."))
    return RedirectResponse("/admin/campaigns", status_code=303)


@router.get("/admin/campaigns/{campaign_id}")
def edit_form(campaign_id: int, request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    campaign = db.get(Campaign, campaign_id)
    if campaign is None:
        raise HTTPException(404, f"There is no campaign {campaign_id}.")
    return _form_page(request, user, db, campaign, _values(campaign, db))


@router.post("/admin/campaigns/{campaign_id}", dependencies=[Depends(check_csrf)])
def edit(campaign_id: int, request: Request, form: FormData = Depends(form_fields), user: Annotator = Depends(admin_user),
         db: Session = Depends(get_db)):
    campaign = db.get(Campaign, campaign_id)
    if campaign is None:
        raise HTTPException(404, f"There is no campaign {campaign_id}.")
    try:
        _check_blindness(request, user, form, was_blind=campaign.blind)
        edit_campaign(db, campaign_id, _fields(form))
    except TaskError as error:
        db.rollback()
        return _form_page(request, user, db, db.get(Campaign, campaign_id), _posted_values(form), error.message)
    flash(request, f"Campaign '{campaign.name}' saved.")
    return RedirectResponse("/admin/campaigns", status_code=303)


@router.post("/admin/campaigns/{campaign_id}/open", dependencies=[Depends(check_csrf)])
def open_or_close(campaign_id: int, request: Request, is_open: bool = Form(False), user: Annotator = Depends(admin_user),
                  db: Session = Depends(get_db)):
    campaign = set_open(db, campaign_id, is_open)
    flash(request, f"Campaign '{campaign.name}' is {'open' if is_open else 'closed'}.")
    return RedirectResponse("/admin/campaigns", status_code=303)


@router.post("/admin/campaigns/{campaign_id}/default", dependencies=[Depends(check_csrf)])
def default(campaign_id: int, request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    campaign = make_default(db, campaign_id)
    flash(request, f"'{campaign.name}' is now its run's default campaign (its results page shows it).")
    return RedirectResponse("/admin/campaigns", status_code=303)


# --- Each annotator's quality in a campaign, and excluding one.

@router.get("/admin/campaigns/{campaign_id}/annotators")
def annotators(campaign_id: int, request: Request, consensus: Literal["majority", "dawid-skene"] = Query("majority"),
               user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    campaign = db.get(Campaign, campaign_id)
    if campaign is None:
        raise HTTPException(404, f"There is no campaign {campaign_id}.")
    return render(request, "annotators.html", user=user, report=annotators_report(db, campaign, consensus),
                  consensus_methods=CONSENSUS_METHODS)


@router.post("/admin/campaigns/{campaign_id}/annotators/{name}/exclusion", dependencies=[Depends(check_csrf)])
def exclude_or_include(campaign_id: int, name: str, request: Request, excluded: bool = Form(False),
                       user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Exclude an annotator (their answers leave every verdict; nothing is deleted) or include them again."""
    campaign = db.get(Campaign, campaign_id)
    if campaign is None:
        raise HTTPException(404, f"There is no campaign {campaign_id}.")
    try:
        if excluded:
            exclude_annotator(db, campaign, name, user.id)
        else:
            include_annotator(db, campaign, name)
    except TaskError as error:
        db.rollback()
        flash(request, error.message.partition(": ")[2] or error.message)
        return RedirectResponse(f"/admin/campaigns/{campaign_id}/annotators", status_code=303)
    flash(request, f"{name} is excluded: their answers count in no verdict of '{campaign.name}'." if excluded else
          f"{name} is included again: their answers count again.")
    return RedirectResponse(f"/admin/campaigns/{campaign_id}/annotators", status_code=303)
