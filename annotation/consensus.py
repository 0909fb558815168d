"""Consensus beyond the plain majority: Dawid-Skene estimates of each unit's answer and of each annotator's
confusion matrix, and Krippendorff's alpha with a bootstrap interval.

A label is what `UnitAnswer.label` says: "no", "texture" or "yes:<category>", so a consensus picks the
answer and the object together, as the agreement statistics compare them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping, Sequence

from annotation.aggregate import Settlement, UnitAnswer, UnitVerdict, aggregate_unit, aggregate_units
from model.settings import ANNOTATION, DETECTOR_PRECISION

if TYPE_CHECKING:
    import numpy as np      # imported where used: the web app answers its first page without it

CONSENSUS_METHODS = ("majority", "dawid-skene")

# Dawid-Skene is one EM loop: crowd-kit implements it but pulls transformers, nltk and pyarrow into the app.
DS_MAX_ITERATIONS = 100
DS_TOLERANCE = 1e-7
# Pseudo-count in each confusion cell: a class an annotator never saw keeps a small, not a zero, likelihood.
DS_SMOOTHING = 0.01
# The consensus's prior on each annotator (a MAP estimate): pseudo-answers worth CONSENSUS_PRIOR_RIGHT right
# answers in each class and CONSENSUS_PRIOR_CELL in every cell. Plain EM overfits the confusion rows of rare
# classes (a few units each of most categories): on bench_crowd's demo-scale runs it counted 11-24% too many
# detectors without spammers; the prior keeps a row it barely saw near "mostly right".
CONSENSUS_PRIOR_RIGHT = 2.0
CONSENSUS_PRIOR_CELL = 0.1


@dataclass(frozen=True)
class DawidSkene:
    """The EM estimate: per item, the posterior over classes; per worker, P(says column | truth is row)."""

    classes: tuple[str, ...]
    workers: tuple[str, ...]
    posteriors: np.ndarray          # (items, classes)
    priors: np.ndarray              # (classes,)
    confusions: np.ndarray          # (workers, classes, classes): rows = true class, columns = given label
    iterations: int

    @property
    def labels(self) -> list[str]:
        """Each item's most probable class (the first in `classes` order on an exact tie)."""
        return [self.classes[i] for i in self.posteriors.argmax(axis=1)]

    def accuracy(self, worker: str) -> float:
        """The worker's estimated probability of giving the true label, weighted by the class priors."""
        import numpy as np

        confusion = self.confusions[self.workers.index(worker)]
        return float(np.dot(self.priors, np.diag(confusion)))


def dawid_skene(labels: Sequence[Mapping[str, str]], *, known: Mapping[int, str] | None = None,
                max_iterations: int = DS_MAX_ITERATIONS, tolerance: float = DS_TOLERANCE,
                smoothing: float = DS_SMOOTHING, prior_right: float = 0.0) -> DawidSkene:
    """Dawid & Skene (1979) by EM, started from the majority vote's shares (as crowd-kit starts).

    `labels[i]` maps each worker who labelled item i to the label given. Items with no label get the
    class priors as their posterior. `known` maps items whose class is known (gold) to it: their posterior
    stays that class, so they anchor each worker's confusion matrix. Each confusion row starts from
    `smoothing` pseudo-counts per cell plus `prior_right` on its diagonal (0 and the defaults: plain EM).
    """
    import numpy as np

    if not labels:
        raise ValueError("Dawid-Skene needs at least one item")
    known = dict(known or {})
    if any(not 0 <= i < len(labels) for i in known):
        raise ValueError(f"known items must index the {len(labels)} items")
    classes = tuple(sorted({label for item in labels for label in item.values()} | set(known.values())))
    workers = tuple(sorted({worker for item in labels for worker in item}))
    if not classes:
        raise ValueError("Dawid-Skene needs at least one label")
    class_index = {c: i for i, c in enumerate(classes)}
    worker_index = {w: i for i, w in enumerate(workers)}
    # (item, worker, label) triples: the observed data.
    rows = np.array([(i, worker_index[w], class_index[c]) for i, item in enumerate(labels) for w, c in item.items()],
                    dtype=int).reshape(-1, 3)
    items, given_by, given = rows[:, 0], rows[:, 1], rows[:, 2]
    n_items, n_workers, n_classes = len(labels), len(workers), len(classes)

    votes = np.zeros((n_items, n_classes))
    np.add.at(votes, (items, given), 1.0)
    totals = votes.sum(axis=1, keepdims=True)
    posteriors = np.divide(votes, totals, out=np.full_like(votes, 1.0 / n_classes), where=totals > 0)
    known_items = np.array(sorted(known), dtype=int)
    known_classes = np.array([class_index[known[i]] for i in sorted(known)], dtype=int)

    def anchored(posteriors: np.ndarray) -> np.ndarray:
        posteriors[known_items] = 0.0
        posteriors[known_items, known_classes] = 1.0
        return posteriors

    posteriors = anchored(posteriors)
    # With gold, the first confusions come from the gold items alone: started from the majority, EM keeps a
    # majority that is consistently wrong (two who swap the answers outvote one who does not) whatever gold says.
    teaching = np.zeros_like(posteriors)
    teaching[known_items] = posteriors[known_items]

    previous = -np.inf
    iteration = 0
    for iteration in range(1, max_iterations + 1):
        # M step: priors and each worker's confusion matrix from the current posteriors.
        priors = posteriors.mean(axis=0)
        if iteration > 1 or not known:
            teaching = posteriors
        confusions = np.full((n_workers, n_classes, n_classes), smoothing) + prior_right * np.eye(n_classes)
        np.add.at(confusions, (given_by, slice(None), given), teaching[items])
        # np.add.at with a slice in the middle adds the posterior vector along the true-class axis.
        confusions /= confusions.sum(axis=2, keepdims=True)
        # E step: posterior of each item's class given every label it received.
        log_joint = np.tile(np.log(np.maximum(priors, 1e-300)), (n_items, 1))
        np.add.at(log_joint, items, np.log(confusions[given_by, :, given]))
        log_evidence = np.logaddexp.reduce(log_joint, axis=1, keepdims=True)
        posteriors = anchored(np.exp(log_joint - log_evidence))
        likelihood = float(log_evidence.sum())
        if abs(likelihood - previous) < tolerance:
            break
        previous = likelihood
    return DawidSkene(classes=classes, workers=workers, posteriors=posteriors, priors=posteriors.mean(axis=0),
                      confusions=confusions, iterations=iteration)


def consensus_estimate(labels: Sequence[Mapping[str, str]],
                       gold: Sequence[tuple[str, Mapping[str, str]]] = ()) -> DawidSkene:
    """The consensus's Dawid-Skene over `labels` (one item per unit), anchored on `gold`: each gold unit's known
    label and the labels given to it. Gold units join the fit with their class fixed (they teach each annotator's
    confusion) and are left out of the result, which has `labels`' items in order."""
    items = [*labels, *(given for _, given in gold)]
    known = {len(labels) + i: label for i, (label, given) in enumerate(gold)}
    estimate = dawid_skene(items, known=known, smoothing=CONSENSUS_PRIOR_CELL, prior_right=CONSENSUS_PRIOR_RIGHT)
    return replace(estimate, posteriors=estimate.posteriors[:len(labels)])


def unit_labels(answers_by_unit: Mapping[int, Sequence[UnitAnswer]]) -> tuple[list[int], list[dict[str, str]]]:
    """Units in order and, for each, {annotator: label}: the input `dawid_skene` and `alpha` take."""
    units = sorted(answers_by_unit)
    return units, [{a.annotator: a.label for a in answers_by_unit[unit]} for unit in units]


def label_as_settlement(label: str) -> Settlement:
    """ "yes:dog" -> Settlement("yes", "dog"); "no" -> Settlement("no")."""
    answer, _, category = label.partition(":")
    return Settlement(answer, category or None)


def consensus_verdicts(answers_by_unit: Mapping[int, Sequence[UnitAnswer]], method: str = "majority", *,
                       n_images: int = ANNOTATION.top_images, threshold: float = DETECTOR_PRECISION,
                       settlements: Mapping[int, Settlement] | None = None,
                       gold: Sequence[tuple[str, Mapping[str, str]]] = ()) -> list[UnitVerdict]:
    """Every unit's verdict, its answer and object chosen by `method`: "majority" (the plurality rules of
    annotation/aggregate.py) or "dawid-skene" (`consensus_estimate`'s most probable label, fitted on all the
    units at once and anchored on `gold`). An admin's settlement wins either way; image marks follow the
    annotators who named the object."""
    if method not in CONSENSUS_METHODS:
        raise ValueError(f"consensus must be one of {CONSENSUS_METHODS}, got {method!r}")
    settlements = settlements or {}
    if method == "majority" or not any(answers_by_unit.values()):
        return aggregate_units(answers_by_unit, n_images=n_images, threshold=threshold, settlements=settlements)
    units, labels = unit_labels(answers_by_unit)
    answered = [i for i, item in enumerate(labels) if item]
    estimate = consensus_estimate([labels[i] for i in answered], gold)
    chosen = {units[i]: label for i, label in zip(answered, estimate.labels)}
    return [aggregate_unit(unit, answers_by_unit[unit], n_images=n_images, threshold=threshold,
                           settlement=settlements.get(unit),
                           consensus=label_as_settlement(chosen[unit]) if unit in chosen else None)
            for unit in units]


@dataclass(frozen=True)
class Alpha:
    alpha: float                    # Krippendorff's alpha, nominal (NaN when undefined)
    low: float                      # bootstrap percentile interval over units
    high: float
    n_units: int                    # units with >= 2 labels (the pairable ones)
    resamples: int


def krippendorff_alpha(labels: Sequence[Mapping[str, str]], *, resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> Alpha | None:
    """Nominal Krippendorff's alpha over items with any number (>= 2) of labels, and a bootstrap interval
    from resampling the items; None while fewer than two items are pairable."""
    import krippendorff  # only the results pages and the statistics need it
    import numpy as np

    pairable = [item for item in labels if len(item) >= 2]
    if len(pairable) < 2:
        return None
    classes = sorted({label for item in pairable for label in item.values()})
    workers = sorted({worker for item in pairable for worker in item})
    code = {c: float(i) for i, c in enumerate(classes)}
    data = np.full((len(workers), len(pairable)), np.nan)
    for column, item in enumerate(pairable):
        for worker, label in item.items():
            data[workers.index(worker), column] = code[label]

    def alpha_of(columns: np.ndarray) -> float:
        sample = data[:, columns]
        if len(np.unique(sample[~np.isnan(sample)])) < 2:
            return float("nan")        # one label everywhere: alpha is undefined
        return float(krippendorff.alpha(reliability_data=sample, level_of_measurement="nominal"))

    everything = np.arange(data.shape[1])
    rng = np.random.default_rng(seed)
    draws = np.array([alpha_of(rng.choice(everything, size=everything.size)) for _ in range(resamples)])
    draws = draws[~np.isnan(draws)]
    tail = (1.0 - level) / 2 * 100
    low, high = (np.percentile(draws, [tail, 100 - tail]) if draws.size else (np.nan, np.nan))
    return Alpha(alpha=alpha_of(everything), low=float(low), high=float(high), n_units=len(pairable),
                 resamples=resamples)
