"""Categories: the one a typed name means (a new one if none), and an admin's merge of a new name."""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.app.errors import TaskError
from backend.app.security import normalise_category_name
from backend.db.models import Annotation, Category, Unit, UnitSettlement
from model.categories import category_by_name


def resolve_category(db: Session, raw_name: str) -> Category:
    """The category called `raw_name` (or with it as a synonym); a new one, for an admin to merge, if none."""
    try:
        name = normalise_category_name(raw_name)
    except ValueError as error:
        raise TaskError(f"Category name rejected: {error}.") from None
    category = db.scalar(select(Category).where(func.lower(Category.name) == name))
    if category is None:
        for candidate in db.scalars(select(Category).where(Category.synonyms.contains(name))):
            if name in (s.strip().lower() for s in candidate.synonyms.split(";")):
                category = candidate
                break
    if category is None:
        category = Category(name=name, synonyms="", stuff=False, characteristic_sound=False)
        db.add(category)
        db.flush()
    return category


def get_category(db: Session, category_id: int) -> Category:
    category = db.get(Category, category_id)
    if category is None:
        raise TaskError(f"There is no category {category_id}.", 404)
    return category


def merge_category(db: Session, category_id: int, into: str) -> tuple[str, str]:
    """Fold an annotator's new name into an existing category, committed: its answers, settlements and
    automatic labels move, and the name becomes a synonym. Returns (merged name, target name)."""
    source = get_category(db, category_id)
    target = db.scalar(select(Category).where(Category.name == into.strip().lower()))
    if target is None:
        raise TaskError("Merge into which category? Pick an existing name from the list.")
    if target.id == source.id:
        raise TaskError("A category cannot be merged into itself.")
    if source.name in category_by_name():
        raise TaskError(f"{source.name} is on the project's category list; only new names can be merged.")
    for model in (Annotation, UnitSettlement):
        db.execute(update(model).where(model.category_id == source.id).values(category_id=target.id))
    db.execute(update(Unit).where(Unit.auto_category_id == source.id).values(auto_category_id=target.id))
    synonyms = [s for s in target.synonyms.split(";") if s]
    target.synonyms = ";".join(synonyms + [source.name])
    db.delete(source)
    db.commit()
    return source.name, target.name
