"""Categories for admins: the characteristic-sound flag, and merging annotators' new names."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.app.categories import get_category, merge_category
from backend.app.deps import admin_user, check_csrf, flash, get_db, render
from backend.db.models import Annotation, Annotator, Category
from model.categories import category_by_name

router = APIRouter(include_in_schema=False)


@router.get("/admin/categories")
def categories(request: Request, user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    uses = dict(db.execute(select(Annotation.category_id, func.count()).group_by(Annotation.category_id)).all())
    rows = db.scalars(select(Category).order_by(Category.name)).all()
    listed = category_by_name()
    return render(request, "categories.html", user=user, categories=[c for c in rows if c.name in listed],
                  new_names=[c for c in rows if c.name not in listed], uses=uses,
                  listed_names=sorted(listed))


@router.post("/admin/categories/{category_id}/characteristic", dependencies=[Depends(check_csrf)])
def set_characteristic(category_id: int, request: Request, characteristic: bool = Form(),
                       _user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    category = get_category(db, category_id)
    category.characteristic_sound = characteristic
    db.commit()
    flash(request, f"{category.name}: {'has' if characteristic else 'has no'} characteristic sound.")
    return RedirectResponse(f"/admin/categories#c{category_id}", status_code=303)


@router.post("/admin/categories/{category_id}/merge", dependencies=[Depends(check_csrf)])
def merge(category_id: int, request: Request, into: str = Form(max_length=200),
          _user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Fold an annotator's new name into an existing category: its answers move, the name becomes a synonym."""
    merged, target = merge_category(db, category_id, into)
    flash(request, f"Merged {merged} into {target}.")
    return RedirectResponse("/admin/categories", status_code=303)
