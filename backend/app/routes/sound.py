"""The sound task: is a detector's object audible in the clips of its top images?"""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from backend.app.deps import check_csrf, current_user, flash, form_fields, get_db, render
from backend.app.results import detector_units
from backend.app.units import TaskError, next_sound_unit, sound_clips, submit_sound_judgements
from backend.db.models import Annotator, Unit

router = APIRouter(include_in_schema=False)
FIELD_PREFIX = "audible_"


@router.get("/sound")
def next_unit(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    unit_id = next_sound_unit(db, user.id, list(detector_units(db)))
    if unit_id is None:
        return render(request, "queue_empty.html", user=user, can_undo=False,
                      message="No detector is waiting for your sound judgements. Detectors appear here "
                              "once their annotators agree on an object.")
    return RedirectResponse(f"/sound/{unit_id}", status_code=303)


@router.get("/sound/{unit_id}")
def sound_page(unit_id: int, request: Request, user: Annotator = Depends(current_user),
               db: Session = Depends(get_db)):
    unit = db.get(Unit, unit_id)
    category = detector_units(db).get(unit_id)
    if unit is None or category is None:
        raise HTTPException(404, f"Unit {unit_id} is not a detector (yet), so it has no sound task.")
    return render(request, "sound.html", user=user, unit=unit, category=category,
                  images=sound_clips(db, unit_id))


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
    if unit_id not in detector_units(db):
        raise HTTPException(404, f"Unit {unit_id} is not a detector (yet), so it has no sound task.")
    try:
        count = submit_sound_judgements(db, user.id, unit_id, judgements)
    except TaskError as error:
        raise HTTPException(error.status, error.message) from None
    if "text/html" not in request.headers.get("accept", ""):
        return {"unit": unit_id, "judged": count}
    flash(request, f"Saved {count} sound judgements for unit {unit_id}.")
    return RedirectResponse("/sound", status_code=303)
