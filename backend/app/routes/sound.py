"""The sound task: is a detector's object audible in the clips of its top images?

Like the unit task, only POSTs hand out units, and only the unit held for an annotator is shown or taken."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from backend.app.deps import check_csrf, current_user, flash, form_fields, get_db, render, wants_html
from backend.app.reservations import current_reservation, held_for, utcnow
from backend.app.sound import (SOUND_QUEUE, detector_category, reserve_next_sound_unit, sound_clips,
                               submit_sound_judgements)
from backend.db.models import Annotator, Unit

router = APIRouter(include_in_schema=False)
FIELD_PREFIX = "audible_"


def _next_unit(request: Request, user: Annotator, db: Session):
    reservation = reserve_next_sound_unit(db, user.id)
    if reservation is None:
        return render(request, "queue_empty.html", user=user, can_undo=False,
                      message="No detector is waiting for your sound judgements. Detectors appear here "
                              "once their annotators agree on an object.")
    return RedirectResponse(f"/sound/{reservation.unit_id}", status_code=303)


@router.get("/sound")
def queue(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    held = current_reservation(db, SOUND_QUEUE, user.id, utcnow())
    if held is not None:
        return RedirectResponse(f"/sound/{held.unit_id}", status_code=303)
    return render(request, "queue_start.html", user=user, title="Sound task", action="/sound",
                  button_id="next-detector", button="Judge the next detector",
                  message="Listen to the clips of a detector's top images: is its object's own sound audible?")


@router.post("/sound", dependencies=[Depends(check_csrf)])
def take_next_unit(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    return _next_unit(request, user, db)


@router.get("/sound/{unit_id}")
def sound_page(unit_id: int, request: Request, user: Annotator = Depends(current_user),
               db: Session = Depends(get_db)):
    unit = db.get(Unit, unit_id)
    if unit is None:
        raise HTTPException(404, f"There is no unit {unit_id}.")
    category = detector_category(db, unit_id)
    if held_for(db, SOUND_QUEUE, unit_id, user.id, utcnow()) is None:
        flash(request, f"Unit {unit_id} is not held for you in the sound task.")
        return RedirectResponse("/sound", status_code=303)
    return render(request, "sound.html", user=user, unit=unit, category=category, images=sound_clips(db, unit_id))


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
        return {"unit": unit_id, "judged": count}
    flash(request, f"Saved {count} sound judgements for unit {unit_id}.")
    return _next_unit(request, user, db)
