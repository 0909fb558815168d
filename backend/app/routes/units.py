"""The unit task: the queue of each campaign, one unit's page, submitting an answer, skipping a unit, undoing
the last answer.

Only POSTs hand out units: a GET (which another site can make a browser send) changes nothing."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from backend.app.deps import (TaskPages, check_csrf, counted, current_user, flash, get_db, get_settings,
                              keep_withdrawn_answer, named_unit, render, wants_html, withdrawn_answer)
from backend.app.campaign import campaign_size, instructions
from backend.app.errors import TaskError
from backend.app.units import (UNIT_QUEUE, reserve_next_unit, skip_count, skip_unit, submission_count,
                               submit_annotation, undo_deadline, undo_last_annotation, units_left)
from backend.config import Settings
from backend.db.models import Annotator, Campaign, Unit, UnitImage
from model.categories import category_by_name

router = APIRouter(include_in_schema=False)


def _start_page(db: Session, annotator_id: int) -> dict:
    return {"questions": instructions(db)}


def _can_undo(db: Session, annotator_id: int, settings: Settings) -> bool:
    return undo_deadline(db, annotator_id, settings.undo_minutes, settings.last_judge_undo_seconds) is not None


PAGES = TaskPages(UNIT_QUEUE, "/annotate", "/units", reserve_next_unit, _can_undo, "/annotations/undo",
                  start={"title": "Label units", "button_id": "next-unit", "button": "Label the next unit",
                         "message": "Each unit is held for you while you label it; then the next one comes. "
                                    "For each unit, three questions:"},
                  empty="Every unit has all its annotators or has been labelled (or skipped) by you. Thank you!",
                  start_extra=_start_page, units_left=units_left)
PAGES.add_routes(router)


def _task_page(request: Request, user: Annotator, db: Session, unit_id: int, held, settings: Settings,
               filled: dict | None, error: str | None = None, status_code: int = 200):
    """The unit's task page; `filled`: an answer to fill in (one undo took back, or one sent back with `error`)."""
    # The page only links the pictures (/images/{id}): loading 60 JPEG blobs here would waste the time.
    images = db.scalars(select(UnitImage).options(defer(UnitImage.masked_jpeg))
                        .where(UnitImage.unit_id == unit_id).order_by(UnitImage.rank)).all()
    # Only the project's list: names other annotators invented would reveal their answers.
    names = sorted(category_by_name())
    campaign = db.get(Campaign, held.campaign_id)
    # Undo is offered only while it can succeed; the page hides it when that time passes.
    undo_until = undo_deadline(db, user.id, settings.undo_minutes, settings.last_judge_undo_seconds)
    return render(request, "unit.html", user=user, unit=db.get(Unit, unit_id), images=images, category_names=names,
                  expires_at=held.expires_at.strftime("%H:%M"), done_count=submission_count(db, user.id),
                  undo_until=undo_until, previous=filled, error=error, status_code=status_code,
                  campaign=campaign, units_left=units_left(db, user.id, campaign), campaign_size=campaign_size(db, campaign),
                  questions=instructions(db, campaign), hold_path=PAGES.path + "/hold", skipped=skip_count(db, user.id))


@router.get("/units/{unit_id}")
def unit_page(unit_id: int, request: Request, user: Annotator = Depends(current_user),
              db: Session = Depends(get_db), settings: Settings = Depends(get_settings)):
    held = PAGES.held(request, user, db, unit_id)
    if held is None:
        return RedirectResponse(PAGES.path, status_code=303)
    return _task_page(request, user, db, unit_id, held, settings, withdrawn_answer(request, "unit", unit_id))


@router.post("/units/{unit_id}/annotation", dependencies=[Depends(check_csrf)])
def submit(unit_id: int, request: Request, answer: str = Form("", max_length=20),
           category: str = Form("", max_length=1000), marked: list[str] = Form([]),
           user: Annotator = Depends(current_user), db: Session = Depends(get_db),
           settings: Settings = Depends(get_settings)):
    try:
        marked_ids = [int(value) for value in marked]
    except ValueError:
        raise HTTPException(422, "Marked images must be image numbers.") from None
    try:
        done = submit_annotation(db, user.id, unit_id, answer, category, marked_ids)
    except TaskError as error:
        held = PAGES.held(request, user, db, unit_id) if error.status == 422 and wants_html(request) else None
        if held is None:
            raise
        # A slip (a yes without its object): the same page again, with every choice and mark kept.
        kept = {"answer": answer, "category": category, "marked": marked_ids, "kept": True}
        return _task_page(request, user, db, unit_id, held, settings, kept, error.message, status_code=422)
    if not wants_html(request):
        return {"unit": done.unit_id, "answer": done.answer, "category": done.category, "marked": done.marked}
    saved = f" ({done.category}, {counted(done.marked, 'image')} marked)" if done.category else ""
    flash(request, f"Saved {named_unit(db, done.unit_id)}: {done.answer}{saved}.")
    return PAGES.next_unit(request, user, db, db.get(Campaign, done.campaign_id))


@router.post("/units/{unit_id}/skip", dependencies=[Depends(check_csrf)])
def skip(unit_id: int, request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    """Can't tell: the unit goes to someone else; it is not offered to this annotator again in its campaign."""
    campaign_id = skip_unit(db, user.id, unit_id)
    if not wants_html(request):
        return {"unit": unit_id, "skipped": True, "campaign": campaign_id}
    flash(request, f"Skipped {named_unit(db, unit_id)}: it goes to someone else.")
    return PAGES.next_unit(request, user, db, db.get(Campaign, campaign_id))


@router.post("/annotations/undo", dependencies=[Depends(check_csrf)])
def undo(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db),
         settings: Settings = Depends(get_settings)):
    withdrawn = undo_last_annotation(db, user.id, settings.undo_minutes, settings.last_judge_undo_seconds,
                                     hold_minutes=settings.hold_idle_minutes)
    keep_withdrawn_answer(request, "unit", withdrawn.unit_id, {
        "answer": withdrawn.answer, "category": withdrawn.category, "marked": withdrawn.marked_image_ids})
    flash(request, f"Your answer for {named_unit(db, withdrawn.unit_id)} was withdrawn.")
    return RedirectResponse(f"/units/{withdrawn.unit_id}", status_code=303)
