"""The object categories (SUN/ADE20K names plus a few the paper discusses): the one source of truth."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Category:
    name: str
    synonyms: tuple[str, ...]
    stuff: bool                  # amorphous region (sky, water) rather than a countable thing
    characteristic_sound: bool   # the category usually makes a sound of its own


@lru_cache(maxsize=1)
def _load() -> tuple[Category, ...]:
    # importlib.resources so the CSV is found when the package is installed, not only in a checkout
    text = resources.files("model.data").joinpath("object_categories.csv").read_text(encoding="utf-8")
    return tuple(
        Category(name=row["name"],
                 synonyms=tuple(s for s in row["synonyms"].split(";") if s),
                 stuff=row["stuff"] == "1",
                 characteristic_sound=row["characteristic_sound"] == "1")
        for row in csv.DictReader(io.StringIO(text)))


def load_categories() -> list[Category]:
    """Every category, in the CSV's order."""
    return list(_load())


def category_by_name() -> dict[str, Category]:
    return {c.name: c for c in _load()}
