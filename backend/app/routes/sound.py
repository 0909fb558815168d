"""The sound task: is a detector's object audible in the clips of its top images?

Like the unit task, only POSTs hand out units, and only the unit held for an annotator is shown or taken."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from backend.app.deps import (TaskPages, check_csrf, counted, current_user, flash, form_fields, get_db, get_settings,
                              keep_withdrawn_answer, named_unit, render, wants_html, withdrawn_answer)
from backend.app.sound import (SOUND_QUEUE, detector_category, has_sound_judgements, reserve_next_sound_unit,
                               sound_clips, submit_sound_judgements, undo_last_judgements)
from backend.config import Settings
from backend.db.models import Annotator, Campaign, Unit

router = APIRouter(include_in_schema=False)
FIELD_PREFIX = "audible_"


PAGES = TaskPages(SOUND_QUEUE, "/sound", "/sound", reserve_next_sound_unit,
                  lambda db, annotator_id, _settings: has_sound_judgements(db, annotator_id), "/sound/undo",
                  start={"title": "Sound task", "button_id": "next-detector", "button": "Judge the next detector",
                         "message": "Listen to the clips of a detector's top images: is its object's own sound "
                                    "audible?"},
                  empty="No detector is waiting for your sound judgements. Detectors appear here once their "
                        "annotators agree on an object. Units of runs on still images are never here: still "
                        "images have no clips to listen to.")
PAGES.add_routes(router)


# Before /sound/{unit_id}: "undo" is not a unit number.
@router.post("/sound/undo", dependencies=[Depends(check_csrf)])
def undo(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db),
         settings: Settings = Depends(get_settings)):
    withdrawn = undo_last_judgements(db, user.id, settings.undo_minutes, hold_minutes=settings.hold_idle_minutes)
    keep_withdrawn_answer(request, "sound", withdrawn.unit_id,
                          {"judgements": {str(image): audible for image, audible in withdrawn.judgements.items()}})
    flash(request, f"Your sound judgements for {named_unit(db, withdrawn.unit_id)} were withdrawn.")
    return RedirectResponse(f"/sound/{withdrawn.unit_id}", status_code=303)


@router.get("/sound/{unit_id}")
def sound_page(unit_id: int, request: Request, user: Annotator = Depends(current_user),
               db: Session = Depends(get_db)):
    held = PAGES.held(request, user, db, unit_id)
    if held is None:
        return RedirectResponse(PAGES.path, status_code=303)
    campaign = db.get(Campaign, held.campaign_id)
    category = detector_category(db, unit_id, campaign)
    previous = withdrawn_answer(request, "sound", unit_id)
    return render(request, "sound.html", user=user, unit=db.get(Unit, unit_id), category=category,
                  images=sound_clips(db, unit_id), can_undo=has_sound_judgements(db, user.id),
                  previous=previous["judgements"] if previous else {}, campaign=campaign,
                  hold_path=PAGES.path + "/hold")


@router.post("/sound/{unit_id}", dependencies=[Depends(check_csrf)])
def submit(unit_id: int, request: Request, form: FormData = Depends(form_fields),
           user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    judgements = {}
    for key, value in form.multi_items():
        if not key.startswith(FIELD_PREFIX):
            continue
        try:
            judgements[int(key.removeprefix(FIELD_PREFIX))] = str(value)
        except ValueError:
            raise HTTPException(422, f"Unknown field {key[:40]!r}.") from None
    count = submit_sound_judgements(db, user.id, unit_id, judgements)
    if not wants_html(request):
        return {"unit": unit_id, "judged": count.judged}
    flash(request, f"Saved {counted(count.judged, 'sound judgement')} for {named_unit(db, unit_id)}.")
    return PAGES.next_unit(request, user, db, db.get(Campaign, count.campaign_id))
