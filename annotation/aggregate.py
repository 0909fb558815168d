"""One unit's verdict from its annotators' answers (the paper's section 4.1).

Rules, applied in order:
- answer: the plurality of "yes" / "no" / "texture"; a tie leaves the unit unresolved.
- category: the plurality of the categories named by the annotators who said "yes"; a tie
  leaves the unit unresolved. An admin's `Settlement` replaces both votes.
- image contains the object: marked by a strict majority of the annotators who named the
  winning category. Only they marked images *of that object*; someone who said "no", or named
  another object, marked nothing relevant, so counting them would only dilute the vote.
- detector: answer "yes", resolved, and at least `DETECTOR_PRECISION` of the top images contain it.

Category names are compared exactly: the caller passes canonical names (merges already applied).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from typing import Iterable, Mapping, Sequence

from model.settings import ANNOTATION, DETECTOR_PRECISION

ANSWERS = ("yes", "no", "texture")       # is an object present in many of the unit's regions?
AUDIBLE = ("yes", "no", "unsure")        # does the unit's object make the sound heard in the clip?

# Float tolerance so that e.g. 36/60 reaches a 0.6 threshold whatever the rounding.
PRECISION_TOLERANCE = 1e-9


def answer_label(answer: str, category: str | None) -> str:
    """An answer as one label, as the agreement statistics and consensus compare them: "yes:<category>" for a
    yes, else the answer ("no", "texture")."""
    return f"yes:{category}" if answer == "yes" else answer


@dataclass(frozen=True)
class UnitAnswer:
    """One annotator's answer for one unit; `marked` holds 0-based ranks among its top images; `sequence`, where
    known, orders it among all the answers given (adaptive judging asks who was doubtful when the second came)."""

    annotator: str
    answer: str
    category: str | None = None
    marked: frozenset[int] = frozenset()
    sequence: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}, got {self.answer!r}")
        if self.answer == "yes" and not (self.category and self.category.strip()):
            raise ValueError("a 'yes' answer needs the object's category")
        if self.answer != "yes" and (self.category is not None or self.marked):
            raise ValueError(f"a {self.answer!r} answer names no category and marks no images")
        if any(rank < 0 for rank in self.marked):
            raise ValueError(f"image ranks start at 0, got {sorted(self.marked)[0]}")

    @property
    def label(self) -> str:
        """What this annotator said, as one label: the category for a yes, else the answer."""
        return answer_label(self.answer, self.category)


@dataclass(frozen=True)
class Settlement:
    """An admin's decision for a unit the annotators did not settle."""

    answer: str
    category: str | None = None

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}, got {self.answer!r}")
        if (self.answer == "yes") != bool(self.category):
            raise ValueError("a settlement names a category exactly when its answer is 'yes'")


@dataclass(frozen=True)
class UnitVerdict:
    unit: int
    answer: str | None              # None when the answer vote tied
    category: str | None            # None unless the answer is "yes" and the category vote settled
    unresolved: bool                # a tie the annotators left: listed for an admin to settle
    image_contains: tuple[bool, ...]  # per top image, by rank
    precision: float                # fraction of the top images that contain the category
    is_detector: bool
    agreement: float | None         # fraction of annotator pairs giving the same label; None if < 2
    annotators: tuple[str, ...]
    settled: bool = False           # an admin's settlement decided answer and category


def _plurality(votes: Iterable[str]) -> str | None:
    """The most common vote, or None when the top count is shared (or there are no votes)."""
    ranked = Counter(votes).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def pairwise_agreement(labels: Sequence[str]) -> float | None:
    """Fleiss' per-subject agreement: the fraction of annotator pairs that gave the same label."""
    pairs = list(combinations(labels, 2))
    if not pairs:
        return None
    return sum(a == b for a, b in pairs) / len(pairs)


def aggregate_unit(unit: int, answers: Sequence[UnitAnswer], *,
                   n_images: int = ANNOTATION.top_images,
                   threshold: float = DETECTOR_PRECISION,
                   settlement: Settlement | None = None,
                   consensus: Settlement | None = None) -> UnitVerdict:
    """The verdict for `unit` from its annotators' answers (see the module docstring for rules).

    `consensus` replaces the plurality votes with a model's answer and category (Dawid-Skene, in
    annotation/consensus.py); the marks still come from the annotators who named that category."""
    annotators = [a.annotator for a in answers]
    if len(set(annotators)) != len(annotators):
        duplicated = sorted({name for name in annotators if annotators.count(name) > 1})
        raise ValueError(f"unit {unit}: annotator(s) {duplicated} answered more than once")
    for a in answers:
        if a.marked and max(a.marked) >= n_images:
            raise ValueError(f"unit {unit}: {a.annotator} marked image rank {max(a.marked)}, "
                             f"but the unit has {n_images} images (ranks 0..{n_images - 1})")

    if settlement is not None:
        answer, category = settlement.answer, settlement.category
        unresolved = False
    elif consensus is not None:
        answer, category = consensus.answer, consensus.category
        unresolved = False
    else:
        answer = _plurality(a.answer for a in answers)
        category = (_plurality(a.category for a in answers if a.answer == "yes")
                    if answer == "yes" else None)
        unresolved = answer is None or (answer == "yes" and category is None)

    namers = [a for a in answers if a.answer == "yes" and a.category == category]
    if category is not None and namers:
        marks = Counter(rank for a in namers for rank in a.marked)
        image_contains = tuple(2 * marks[rank] > len(namers) for rank in range(n_images))
    else:
        image_contains = (False,) * n_images
    precision = sum(image_contains) / n_images

    return UnitVerdict(
        unit=unit, answer=answer, category=category, unresolved=unresolved,
        image_contains=image_contains, precision=precision,
        is_detector=category is not None and precision >= threshold - PRECISION_TOLERANCE,
        agreement=pairwise_agreement([a.label for a in answers]),
        annotators=tuple(annotators), settled=settlement is not None)


def aggregate_units(answers_by_unit: Mapping[int, Sequence[UnitAnswer]], *,
                    n_images: int = ANNOTATION.top_images,
                    threshold: float = DETECTOR_PRECISION,
                    settlements: Mapping[int, Settlement] | None = None) -> list[UnitVerdict]:
    """`aggregate_unit` for every unit, in unit order."""
    settlements = settlements or {}
    return [aggregate_unit(unit, answers_by_unit[unit], n_images=n_images, threshold=threshold,
                           settlement=settlements.get(unit))
            for unit in sorted(answers_by_unit)]


def units_for_review(verdicts: Iterable[UnitVerdict]) -> list[UnitVerdict]:
    """Units whose annotators tied on the answer or the category, for an admin to settle."""
    return [v for v in verdicts if v.unresolved]


def human_label(verdict: UnitVerdict) -> str | None:
    """The unit's label as a detector: its category, or None when it is not a detector."""
    return verdict.category if verdict.is_detector else None


def answers_needed(labels: Sequence[str], judges: int, adaptive: bool = False, doubtful: bool = False) -> int:
    """How many answers a unit needs before it leaves the queue. Fixed: `judges`. Adaptive: two, and
    `judges` when those two disagree or one of them is `doubtful` (annotation/quality.py's `is_doubtful`:
    too often wrong on gold units)."""
    if not adaptive or judges <= 2:
        return judges
    first_two = list(labels[:2])
    if len(first_two) == 2 and first_two[0] == first_two[1] and not doubtful:
        return 2
    return judges if len(first_two) == 2 else 2
