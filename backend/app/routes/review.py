"""Units whose annotators tied, for an admin to settle."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.deps import admin_user, check_csrf, flash, get_db, named_unit, render
from backend.app.results import run_report
from backend.app.review import settle_unit
from backend.db.models import Annotator, Category, Run

router = APIRouter(include_in_schema=False)


@router.get("/admin/review")
def review(request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    reports = [run_report(db, run) for run in db.scalars(select(Run).order_by(Run.id))]
    return render(request, "review.html", user=user, reports=reports,
                  category_names=db.scalars(select(Category.name).order_by(Category.name)).all())


@router.post("/admin/units/{unit_id}/settle", dependencies=[Depends(check_csrf)])
def settle(unit_id: int, request: Request, answer: str = Form(max_length=20),
           category: str = Form("", max_length=1000), user: Annotator = Depends(admin_user),
           db: Session = Depends(get_db)):
    decision = settle_unit(db, unit_id, answer, category, user.id)
    flash(request, f"{named_unit(db, unit_id)} settled: {answer}"
          + (f" ({decision.category})." if decision.category else "."))
    return RedirectResponse("/admin/review", status_code=303)
