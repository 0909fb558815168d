"""The campaign page for admins: whether annotators may see every unit's results (blind by default), and the
instructions and examples the annotators' start page gives for each question."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from starlette.datastructures import FormData
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from backend.app.campaign import QUESTIONS, instructions, results_open, set_instructions, set_results_open
from backend.app.deps import admin_user, check_csrf, flash, form_fields, get_db, reauthenticated, render
from backend.db.models import Annotator

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
