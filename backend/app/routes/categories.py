"""Categories for admins: the characteristic-sound flag, and merging annotators' new names."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.app.deps import admin_user, check_csrf, flash, get_db, render
from backend.db.models import Annotation, Annotator, Category, Unit, UnitSettlement
from model.categories import category_by_name

router = APIRouter(include_in_schema=False)


def _category(db: Session, category_id: int) -> Category:
    category = db.get(Category, category_id)
    if category is None:
        raise HTTPException(404, f"There is no category {category_id}.")
    return category


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
    category = _category(db, category_id)
    category.characteristic_sound = characteristic
    db.commit()
    flash(request, f"{category.name}: {'has' if characteristic else 'has no'} characteristic sound.")
    return RedirectResponse(f"/admin/categories#c{category_id}", status_code=303)


@router.post("/admin/categories/{category_id}/merge", dependencies=[Depends(check_csrf)])
def merge(category_id: int, request: Request, into: str = Form(max_length=200),
          _user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    """Fold an annotator's new name into an existing category: its answers move, the name becomes a synonym."""
    source = _category(db, category_id)
    target = db.scalar(select(Category).where(Category.name == into.strip().lower()))
    if target is None:
        raise HTTPException(422, "Merge into which category? Pick an existing name from the list.")
    if target.id == source.id:
        raise HTTPException(422, "A category cannot be merged into itself.")
    if source.name in category_by_name():
        raise HTTPException(422, f"{source.name} is on the project's category list; only new names can be merged.")
    for model in (Annotation, UnitSettlement):
        db.execute(update(model).where(model.category_id == source.id).values(category_id=target.id))
    db.execute(update(Unit).where(Unit.auto_category_id == source.id).values(auto_category_id=target.id))
    synonyms = [s for s in target.synonyms.split(";") if s]
    target.synonyms = ";".join(synonyms + [source.name])
    db.delete(source)
    db.commit()
    flash(request, f"Merged {source.name} into {target.name}.")
    return RedirectResponse("/admin/categories", status_code=303)
