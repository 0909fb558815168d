"""Units whose annotators tied in a campaign, for an admin to settle (there)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.deps import admin_user, check_csrf, flash, get_db, named_unit, render
from backend.app.errors import TaskError
from backend.app.results import run_report
from backend.app.review import settle_unit
from backend.db.models import Annotator, Campaign, Category

router = APIRouter(include_in_schema=False)


@router.get("/admin/review")
def review(request: Request, campaign: int | None = Query(None), user: Annotator = Depends(admin_user),
           db: Session = Depends(get_db)):
    """Every campaign's ties (`?campaign=ID`: that campaign's only)."""
    chosen = db.scalars(select(Campaign).order_by(Campaign.id)).all() if campaign is None else [db.get(Campaign, campaign)]
    if None in chosen:
        raise TaskError(f"campaign: there is no campaign {campaign}.", 404)
    reports = [run_report(db, c.run, c) for c in chosen]
    return render(request, "review.html", user=user, reports=reports,
                  category_names=db.scalars(select(Category.name).order_by(Category.name)).all())


@router.post("/admin/units/{unit_id}/settle", dependencies=[Depends(check_csrf)])
def settle(unit_id: int, request: Request, campaign: int | None = Form(None), answer: str = Form(max_length=20),
           category: str = Form("", max_length=1000), user: Annotator = Depends(admin_user),
           db: Session = Depends(get_db)):
    decision = settle_unit(db, unit_id, answer, category, user.id, campaign)
    flash(request, f"{named_unit(db, unit_id)} settled: {answer}"
          + (f" ({decision.category})." if decision.category else "."))
    return RedirectResponse("/admin/review", status_code=303)
