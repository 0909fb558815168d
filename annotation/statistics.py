"""The paper's statistics over aggregated units: Table 1, Fig. 3 and A1b data, agreement."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from annotation.aggregate import (AUDIBLE, PRECISION_TOLERANCE, UnitAnswer, UnitVerdict, human_label,
                                  pairwise_agreement)
from model.settings import ANNOTATION

if TYPE_CHECKING:
    import numpy as np      # imported where used: the web app answers its first page without it


def fleiss_kappa(table: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa of a (n_units, n_categories) table of rating counts.

    Every row must sum to the same number of raters (>= 2). NaN when chance agreement is
    already perfect (every rating in one category), where kappa is undefined.
    """
    import numpy as np

    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        raise ValueError(f"expected a non-empty (units, categories) table, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError("rating counts cannot be negative")
    raters = counts.sum(axis=1)
    if not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError(f"every unit needs the same number (>= 2) of raters, got {sorted(set(raters))}")
    n = raters[0]
    per_unit = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    category_share = counts.sum(axis=0) / counts.sum()
    observed, chance = per_unit.mean(), (category_share ** 2).sum()
    if np.isclose(chance, 1.0):
        return float("nan")
    return float((observed - chance) / (1.0 - chance))


@dataclass(frozen=True)
class AgreementSummary:
    kappa: float                    # Fleiss' kappa over the complete units (NaN if undefined)
    mean_agreement: float           # mean per-unit pairwise agreement over the same units
    n_units: int                    # units with exactly `annotators_per_unit` answers
    labels: tuple[str, ...]         # the table's columns: "no", "texture", "yes:<category>"...


def agreement_summary(answers_by_unit: Mapping[int, Sequence[UnitAnswer]],
                      annotators_per_unit: int = ANNOTATION.annotators_per_unit
                      ) -> AgreementSummary | None:
    """Agreement over the units that have all their answers; None while there are none.

    An answer's label is "no", "texture" or the named category, so annotators agree only when
    they give the same answer *and* the same object. Incomplete units are left out because
    Fleiss' kappa needs the same number of raters per unit.
    """
    import numpy as np

    complete = [[a.label for a in answers] for answers in answers_by_unit.values()
                if len(answers) == annotators_per_unit]
    if annotators_per_unit < 2 or not complete:
        return None
    labels = tuple(sorted({label for unit in complete for label in unit}))
    column = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(complete), len(labels)), dtype=int)
    for row, unit in enumerate(complete):
        for label in unit:
            table[row, column[label]] += 1
    return AgreementSummary(
        kappa=fleiss_kappa(table),
        mean_agreement=float(np.mean([pairwise_agreement(unit) for unit in complete])),
        n_units=len(complete), labels=labels)


def detector_histogram(verdicts: Iterable[UnitVerdict]) -> dict[str, int]:
    """Fig. 3: detectors per category, most common first (ties by name)."""
    counts = Counter(v.category for v in verdicts if v.is_detector)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def detectors_by_threshold(verdicts: Iterable[UnitVerdict], thresholds: Sequence[float]) -> list[int]:
    """Fig. A1b: how many units would be detectors at each threshold (aligned with `thresholds`).

    A unit counts when its annotators settled on an object; only the threshold varies.
    """
    import numpy as np

    precisions = np.array([v.precision for v in verdicts if v.category is not None and not v.unresolved])
    # Same tolerance as aggregate_unit, so the curve at 0.6 matches the detector count.
    return [int((precisions >= t - PRECISION_TOLERANCE).sum()) for t in thresholds]


@dataclass(frozen=True)
class ClipJudgement:
    """One annotator's judgement: is the unit's object's own sound audible in this clip?"""

    unit: int
    clip: int                       # rank of the clip among the unit's top clips
    annotator: str
    audible: str                    # "yes" / "no" / "unsure"

    def __post_init__(self) -> None:
        if self.audible not in AUDIBLE:
            raise ValueError(f"audible must be one of {AUDIBLE}, got {self.audible!r}")


def clip_audibility(judgements: Iterable[ClipJudgement]) -> dict[tuple[int, int], bool]:
    """Each judged clip's verdict, keyed by (unit, clip): audible when "yes" outvotes "no".

    "unsure" is no vote; a clip with only "unsure" votes or a yes/no tie is not judged and is
    left out, so it counts in neither the numerator nor the denominator of Table 1.
    """
    votes: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for j in judgements:
        votes[(j.unit, j.clip)][j.audible] += 1
    return {clip: count["yes"] > count["no"]
            for clip, count in votes.items() if count["yes"] != count["no"]}


@dataclass(frozen=True)
class Table1:
    """The paper's Table 1 for one run, with the counts behind its two rates."""

    detectors: int                          # row 1
    characteristic_detectors: int           # row 2
    videos_with_object_sound: float | None  # row 3: audible clips of row-2 units / clips of all detectors
    characteristic_sound_rate: float | None  # row 4: audible clips of row-2 units / clips of row-2 units
    audible_clips: int
    clips_judged: int
    characteristic_clips_judged: int

    def rows(self) -> list[tuple[str, str]]:
        """The four rows as the paper labels and prints them."""
        def percent(rate: float | None) -> str:
            return "n/a" if rate is None else f"{100 * rate:.1f}%"
        return [("# Detectors", str(self.detectors)),
                ("# Detectors for objects with characteristic sounds", str(self.characteristic_detectors)),
                ("Videos with object sound", percent(self.videos_with_object_sound)),
                ("Characteristic sound rate", percent(self.characteristic_sound_rate))]


def table1(verdicts: Iterable[UnitVerdict], characteristic: Mapping[str, bool],
           sound_judgements: Iterable[ClipJudgement]) -> Table1:
    """Table 1 exactly as the paper defines its rows.

    `characteristic` flags categories whose objects make a sound of their own (a category missing
    from it is not flagged). Only those objects can be audible, so row 3's numerator counts the
    audible clips of row-2 units, while its denominator is every judged clip of every detector.
    Judgements of units that are not detectors are ignored.
    """
    detectors = {v.unit: v for v in verdicts if v.is_detector}
    characteristic_units = {u for u, v in detectors.items() if characteristic.get(v.category, False)}
    judged = {clip: audible for clip, audible in clip_audibility(sound_judgements).items()
              if clip[0] in detectors}
    characteristic_judged = {clip: audible for clip, audible in judged.items()
                             if clip[0] in characteristic_units}
    audible = sum(characteristic_judged.values())
    return Table1(
        detectors=len(detectors), characteristic_detectors=len(characteristic_units),
        videos_with_object_sound=audible / len(judged) if judged else None,
        characteristic_sound_rate=audible / len(characteristic_judged) if characteristic_judged else None,
        audible_clips=audible, clips_judged=len(judged),
        characteristic_clips_judged=len(characteristic_judged))


@dataclass(frozen=True)
class LabelAgreement:
    compared: int                   # units with a settled human verdict and an automatic label
    agreed: int
    rate: float | None              # agreed / compared; None when nothing could be compared


def automatic_agreement(verdicts: Iterable[UnitVerdict],
                        automatic_labels: Mapping[int, str | None]) -> LabelAgreement:
    """How often the human label matches the automatic one (demo truth or dissection).

    Both labels are "category if the unit is a detector, else None", so two "not a detector"
    verdicts agree. Units still unresolved, or without an automatic label, are not compared.
    """
    pairs = [(human_label(v), automatic_labels[v.unit]) for v in verdicts
             if not v.unresolved and v.unit in automatic_labels]
    agreed = sum(human == automatic for human, automatic in pairs)
    return LabelAgreement(compared=len(pairs), agreed=agreed,
                          rate=agreed / len(pairs) if pairs else None)
