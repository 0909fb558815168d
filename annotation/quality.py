"""Each annotator's quality in a campaign: how they do on gold units (whose answer is known), how often they
agree with the consensus on the others, how long they take and how often they skip."""
from __future__ import annotations

import bisect
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class GivenAnswer:
    """One answer as quality control sees it: a label as `UnitAnswer.label` ("no", "texture", "yes:dog")."""

    annotator: str
    unit: int
    label: str
    marked: frozenset[int] = frozenset()
    seconds: float | None = None          # from the unit being handed out to the answer; None if unknown


@dataclass(frozen=True)
class GoldAnswer:
    label: str
    marked: frozenset[int] | None = None  # the images known to show the object, where known


@dataclass(frozen=True)
class AnnotatorQuality:
    name: str
    answers: int                          # every answer, gold included
    gold_answered: int
    gold_accuracy: float | None           # right answer and object on gold units; None before any
    gold_marks: float | None              # mean Jaccard overlap of marks with the known images, where known
    agreement: float | None               # share of non-gold answers equal to the unit's consensus label
    median_seconds: float | None
    skips: int

    def as_dict(self) -> dict:
        return {"name": self.name, "answers": self.answers, "gold_answered": self.gold_answered,
                "gold_accuracy": self.gold_accuracy, "gold_marks": self.gold_marks, "agreement": self.agreement,
                "median_seconds": self.median_seconds, "skips": self.skips}


def _jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def annotator_quality(answers: Iterable[GivenAnswer], gold: Mapping[int, GoldAnswer],
                      consensus: Mapping[int, str], skips: Mapping[str, int] | None = None) -> list[AnnotatorQuality]:
    """One row per annotator who answered or skipped, by name. `consensus` holds the non-gold units' labels."""
    skips = skips or {}
    by_annotator: dict[str, list[GivenAnswer]] = defaultdict(list)
    for answer in answers:
        by_annotator[answer.annotator].append(answer)
    rows = []
    for name in sorted(set(by_annotator) | {n for n, k in skips.items() if k}):
        given = by_annotator.get(name, [])
        on_gold = [a for a in given if a.unit in gold]
        right = [a.label == gold[a.unit].label for a in on_gold]
        # Marks are scored only where the annotator named the right object and the gold knows its images.
        overlaps = [_jaccard(a.marked, gold[a.unit].marked) for a in on_gold
                    if gold[a.unit].marked is not None and a.label == gold[a.unit].label
                    and a.label.startswith("yes:")]
        judged = [a.label == consensus[a.unit] for a in given if a.unit not in gold and a.unit in consensus]
        seconds = [a.seconds for a in given if a.seconds is not None]
        rows.append(AnnotatorQuality(
            name=name, answers=len(given), gold_answered=len(on_gold), gold_accuracy=_mean([float(r) for r in right]),
            gold_marks=_mean(overlaps), agreement=_mean([float(j) for j in judged]),
            median_seconds=statistics.median(seconds) if seconds else None, skips=skips.get(name, 0)))
    return rows


# Adaptive judging asks a third judge where one of a unit's two judges is doubtful: right on fewer than
# DOUBTFUL_GOLD_ACCURACY of their gold units, with at least DOUBTFUL_MIN_WRONG of them wrong. A careful annotator
# who slipped once is not doubtful, however few gold units they have met; one who answers at random is, at the
# second wrong gold answer (not after a fixed number of gold units, while their agreeing pairs close units).
DOUBTFUL_GOLD_ACCURACY = 0.7
DOUBTFUL_MIN_WRONG = 2
DOUBTFUL_RULE = (f"right on under {DOUBTFUL_GOLD_ACCURACY:.0%} of their gold units, "
                 f"with {DOUBTFUL_MIN_WRONG} or more wrong")
# Float slack so that e.g. 7 right of 10 reaches a 0.7 bar whatever the rounding.
ACCURACY_TOLERANCE = 1e-9


def _check_bar(min_wrong: int, accuracy: float) -> None:
    if min_wrong < 1 or not 0 <= accuracy <= 1:
        raise ValueError(f"need min_wrong >= 1 and 0 <= accuracy <= 1, got {min_wrong} and {accuracy}")


def is_doubtful(right: int, answered: int, min_wrong: int = DOUBTFUL_MIN_WRONG,
                accuracy: float = DOUBTFUL_GOLD_ACCURACY) -> bool:
    """Whether `right` of `answered` gold answers is below `accuracy` with at least `min_wrong` wrong: a single
    slip is not doubt, though one wrong answer of one would be 0%."""
    _check_bar(min_wrong, accuracy)
    return answered - right >= min_wrong and right / answered < accuracy - ACCURACY_TOLERANCE


class DoubtHistory:
    """When each annotator was doubtful (`is_doubtful` over the gold answers they had given so far), along the
    campaign's answers in the order they were given. `gold_outcomes`: (annotator, the answer's sequence number,
    answered right) per gold answer, in any order."""

    def __init__(self, gold_outcomes: Iterable[tuple[str, int, bool]], min_wrong: int = DOUBTFUL_MIN_WRONG,
                 accuracy: float = DOUBTFUL_GOLD_ACCURACY) -> None:
        _check_bar(min_wrong, accuracy)
        by_annotator: dict[str, list[tuple[int, bool]]] = defaultdict(list)
        for name, sequence, correct in gold_outcomes:
            by_annotator[name].append((sequence, bool(correct)))
        # name -> the sequence numbers at which their doubt changed, and what it became there
        self._changes: dict[str, tuple[list[int], list[bool]]] = {}
        for name, outcomes in by_annotator.items():
            right, doubtful, at, became = 0, False, [], []
            for answered, (sequence, correct) in enumerate(sorted(outcomes), start=1):
                right += correct
                if is_doubtful(right, answered, min_wrong, accuracy) != doubtful:
                    doubtful = not doubtful
                    at.append(sequence)
                    became.append(doubtful)
            self._changes[name] = (at, became)

    def doubtful(self, name: str, before: int | None = None) -> bool:
        """Whether `name` was doubtful on the gold answers they gave before the answer numbered `before`
        (None: on all of them, now)."""
        at, became = self._changes.get(name, ([], []))
        changes = len(at) if before is None else bisect.bisect_left(at, before)
        return became[changes - 1] if changes else False


# Gold from a world's truth: a unit whose top images show one category this often is a sure "yes"; one whose
# best category reaches at most this share of its top images detects nothing a person would name.
GOLD_YES_PRECISION = 0.9
GOLD_NO_PRECISION = 0.2


def gold_from_truth(labels: Iterable[Mapping], yes_precision: float = GOLD_YES_PRECISION,
                    no_precision: float = GOLD_NO_PRECISION, limit: int | None = None,
                    seed: int = 0) -> dict[int, GoldAnswer]:
    """Gold answers from `dissect --truth`'s labels (RUN_DIR/dissection.json rows: unit, category, precision):
    "yes:<category>" where the truth's precision is high, "no" where no category reaches `no_precision`;
    units in between are left to the people. With `limit`, a seeded random sample of that many, half yes
    and half no where there are enough of each: gold units leave Table 1, so a campaign keeps only what
    scoring its annotators needs."""
    if not 0 <= no_precision < yes_precision <= 1:
        raise ValueError(f"need 0 <= no_precision < yes_precision <= 1, got {no_precision} and {yes_precision}")
    gold = {}
    for row in labels:
        precision, category = float(row["precision"]), row.get("category")
        if category and precision >= yes_precision:
            gold[int(row["unit"])] = GoldAnswer(f"yes:{category}")
        elif precision <= no_precision:
            gold[int(row["unit"])] = GoldAnswer("no")
    if limit is None or len(gold) <= limit:
        return gold
    rng = random.Random(seed)
    yes = sorted(u for u, g in gold.items() if g.label != "no")
    no = sorted(u for u, g in gold.items() if g.label == "no")
    n_yes = min(len(yes), max(limit - len(no), limit // 2))
    chosen = rng.sample(yes, n_yes) + rng.sample(no, min(len(no), limit - n_yes))
    return {unit: gold[unit] for unit in sorted(chosen)}
