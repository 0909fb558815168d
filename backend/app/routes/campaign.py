"""The campaign page for admins: whether annotators may see every unit's results (blind by default)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from backend.app.campaign import results_open, set_results_open
from backend.app.deps import admin_user, check_csrf, flash, get_db, render
from backend.db.models import Annotator

router = APIRouter(include_in_schema=False)


@router.get("/admin/campaign")
def campaign(request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    return render(request, "campaign.html", user=user, results_open=results_open(db))


@router.post("/admin/campaign/results", dependencies=[Depends(check_csrf)])
def open_or_close_results(request: Request, is_open: bool = Form(False), user: Annotator = Depends(admin_user),
                          db: Session = Depends(get_db)):
    set_results_open(db, is_open, user.id)
    flash(request, "Annotators now see every unit's results." if is_open else
          "Annotators are blind again: each sees a unit's results only after answering it.")
    return RedirectResponse("/admin/campaign", status_code=303)
