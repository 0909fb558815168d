"""Units whose annotators tied, for an admin to settle."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.deps import admin_user, check_csrf, flash, get_db, render
from backend.app.results import run_report
from backend.app.units import TaskError, resolve_category
from backend.db.models import ANSWERS, Annotator, Category, Run, Unit, UnitSettlement

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
    if db.get(Unit, unit_id) is None:
        raise HTTPException(404, f"There is no unit {unit_id}.")
    if answer not in ANSWERS:
        raise HTTPException(422, f"The answer must be one of {', '.join(ANSWERS)}.")
    if answer == "yes" and not category.strip():
        raise HTTPException(422, "A 'yes' settlement needs the object's category.")
    try:
        category_row = resolve_category(db, category) if answer == "yes" else None
    except TaskError as error:
        raise HTTPException(error.status, error.message) from None
    settlement = db.scalar(select(UnitSettlement).where(UnitSettlement.unit_id == unit_id))
    if settlement is None:
        settlement = UnitSettlement(unit_id=unit_id)
        db.add(settlement)
    settlement.answer, settlement.admin_id = answer, user.id
    settlement.category_id = category_row.id if category_row else None
    db.commit()
    flash(request, f"Unit {unit_id} settled: {answer}" + (f" ({category_row.name})." if category_row else "."))
    return RedirectResponse("/admin/review", status_code=303)
