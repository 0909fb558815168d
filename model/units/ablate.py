"""Do the detectors matter to the sound prediction? Units of a layer switched off (zeroed) in the forward
pass, and what that costs on the test split (``ambient ablate``).

For each set of units (given, one category's detectors, or each category's): each sound label's
accuracy (recall; per bit for binary codes) and the mean probability of the true label, against the
intact network and against as many random other units of the layer, drawn ``random_repeats`` times
(seeded; the spread is reported). Where the dataset comes from the demo world, a category's set is also
measured on the test frames whose heard sources include the category against the other test frames
(``truth``: ``own_drop``, ``own_drop_random``, ``other_drop``: drops in the true label's mean probability).
With ``each_unit`` every unit is also switched off alone (``single_units``: the unit page's "sounds this
unit helps predict").

The layer's output is computed once per batch (model/units/nethook.py ``split_at``); each edit runs the head only.
Entry points: ``measure_ablations`` (tensors in, results out) and ``ablate_run`` (a RUN_DIR's files).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.data import dataset as ds
from model.data import pool as pl
from model.categories import category_by_name
from model.sound.groups import heard_reader
from model.data.frames import load_targets
from model.units.nethook import LayerSplit, ablation_mask, edited, split_at
from model.network.run import RunFolder
from model.settings import ABLATION, DETECTOR_PRECISION, AblationSettings

Batch = tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]   # (layer inputs, targets, {category: heard})


@dataclass(frozen=True)
class UnitSet:
    """Units to switch off together; ``category`` when they are that category's detectors."""

    units: tuple[int, ...]
    category: str | None = None


def outcomes(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, the true label's probability): (N,) each, or for binary codes (N, bits) each, per bit."""
    logits = logits.float()
    if multilabel:
        probability = torch.sigmoid(logits)
        return (logits > 0) == (targets > 0.5), torch.where(targets > 0.5, probability, 1 - probability)
    probability = torch.softmax(logits, dim=1)
    return logits.argmax(1) == targets, probability.gather(1, targets[:, None])[:, 0]


class Tally:
    """Sums over the test frames for one edit of the layer: correct answers per label, and the true
    label's probability on the frames that hear each category and on the others."""

    def __init__(self, num_labels: int, multilabel: bool):
        self.multilabel = multilabel
        self.correct = np.zeros(num_labels)
        self.label_probability = np.zeros(num_labels)       # the true label's probability, summed per label
        self.count = np.zeros(num_labels)
        self.frames = 0
        self.hits = 0.0
        self.probability_sum = 0.0
        self.probability: dict[tuple[str, bool], list[float]] = {}     # (category, heard) -> [sum, frames]

    def add(self, correct: torch.Tensor, probability: torch.Tensor, targets: torch.Tensor,
            heard: dict[str, np.ndarray]) -> None:
        correct, probability = correct.cpu().numpy(), probability.cpu().double().numpy()
        if self.multilabel:
            self.correct += correct.sum(0)
            self.label_probability += probability.sum(0)
            self.count += len(correct)
            self.hits += correct.mean(1).sum()
            probability = probability.mean(1)             # a frame's: its bits' mean
        else:
            labels = targets.cpu().numpy()
            self.correct += np.bincount(labels, weights=correct, minlength=len(self.correct))
            self.label_probability += np.bincount(labels, weights=probability, minlength=len(self.correct))
            self.count += np.bincount(labels, minlength=len(self.count))
            self.hits += correct.sum()
        self.frames += len(correct)
        self.probability_sum += probability.sum()
        for category, mask in heard.items():
            for side in (True, False):
                total = self.probability.setdefault((category, side), [0.0, 0])
                total[0] += probability[mask == side].sum()
                total[1] += int((mask == side).sum())

    def accuracy(self) -> float:
        return self.hits / self.frames

    def true_probability(self) -> float:
        """The true label's mean probability over every test frame."""
        return self.probability_sum / self.frames

    def per_label(self) -> list[float | None]:
        """Each label's accuracy (recall); None for a label no test frame has."""
        return [float(c / n) if n else None for c, n in zip(self.correct, self.count)]

    def per_label_probability(self) -> list[float | None]:
        """Each label's mean true-label probability over its test frames (per bit for binary codes)."""
        return [float(p / n) if n else None for p, n in zip(self.label_probability, self.count)]

    def mean_probability(self, category: str, heard: bool) -> float | None:
        total, frames = self.probability.get((category, heard), (0.0, 0))
        return total / frames if frames else None


def _drop(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else before - after


def random_sets(unit_set: UnitSet, num_units: int, repeats: int, seed: int, index: int) -> list[tuple[int, ...]]:
    """``repeats`` random sets of as many other units of the layer (seeded by ``seed`` and the set's ``index``)."""
    others = np.setdiff1d(np.arange(num_units), unit_set.units)
    rng = np.random.default_rng([seed, index])
    size = min(len(unit_set.units), len(others))
    return [tuple(sorted(rng.choice(others, size, replace=False).tolist())) for _ in range(repeats)]


def measure_ablations(head: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[Batch], sets: Sequence[UnitSet],
                      num_units: int, num_labels: int, multilabel: bool, repeats: int = ABLATION.random_repeats,
                      seed: int = ABLATION.seed, each_unit: bool = False, truth: bool = False) -> dict:
    """The ablation results (``ablate_run``'s JSON but the run's particulars) of ``sets`` of a layer's units.

    ``batches`` are the layer's outputs on the test frames (N, units, ...), their targets, and per category
    which frames hear it (``truth``: the world's truth is known; else ``heard`` may be empty).
    """
    masks = [ablation_mask(s.units, num_units) for s in sets]          # out-of-range units refused before any work
    randoms = [random_sets(s, num_units, repeats, seed, i) for i, s in enumerate(sets)]
    edits: list[torch.Tensor | None] = [None, *masks,
                                        *(ablation_mask(r, num_units) for draws in randoms for r in draws)]
    if each_unit:
        edits += [ablation_mask([unit], num_units) for unit in range(num_units)]
    tallies = [Tally(num_labels, multilabel) for _ in edits]
    with torch.inference_mode():
        for features, targets, heard in batches:
            for edit, tally in zip(edits, tallies):
                logits = head(edited(features, None if edit is None else edit.to(features.device)))
                tally.add(*outcomes(logits, targets.to(logits.device), multilabel), targets, heard)
    if not tallies[0].frames:
        raise ValueError("no test frames to measure the ablations on")
    base = tallies[0]
    result = {"baseline": {"accuracy": base.accuracy(), "per_label": base.per_label(),
                           "true_probability": base.true_probability(),
                           "per_label_probability": base.per_label_probability()}, "ablations": []}
    random_tallies = iter(tallies[1 + len(sets):1 + len(sets) + len(sets) * repeats])
    for unit_set, tally in zip(sets, tallies[1:1 + len(sets)]):
        drawn = [next(random_tallies) for _ in range(repeats)]
        accuracies = [t.accuracy() for t in drawn]
        ablation = {"units": list(unit_set.units), "category": unit_set.category, "accuracy": tally.accuracy(),
                    "per_label": tally.per_label(), "true_probability": tally.true_probability(),
                    "random": {"accuracy": float(np.mean(accuracies)) if drawn else None,
                               "accuracy_std": float(np.std(accuracies)) if drawn else None, "repeats": len(drawn),
                               "true_probability": float(np.mean([t.true_probability() for t in drawn]))
                               if drawn else None}}
        if truth and unit_set.category is not None:
            category = unit_set.category
            own_base, other_base = base.mean_probability(category, True), base.mean_probability(category, False)
            own_random = [_drop(own_base, t.mean_probability(category, True)) for t in drawn]
            other_random = [_drop(other_base, t.mean_probability(category, False)) for t in drawn]
            known = [d for d in own_random if d is not None]
            known_other = [d for d in other_random if d is not None]
            ablation["truth"] = {
                "own_drop": _drop(own_base, tally.mean_probability(category, True)),
                "own_drop_random": float(np.mean(known)) if known else None,
                "own_drop_random_std": float(np.std(known)) if known else None,
                "other_drop": _drop(other_base, tally.mean_probability(category, False)),
                "other_drop_random": float(np.mean(known_other)) if known_other else None,
                "own_frames": int(tally.probability.get((category, True), (0, 0))[1]),
                "other_frames": int(tally.probability.get((category, False), (0, 0))[1]),
                "own_probability": own_base, "other_probability": other_base}
        result["ablations"].append(ablation)
    if each_unit:
        result["single_units"] = [{"unit": unit, "accuracy": tally.accuracy(), "per_label": tally.per_label(),
                                   "per_label_probability": tally.per_label_probability()}
                                  for unit, tally in enumerate(tallies[len(tallies) - num_units:])]
    return result


def detector_sets(labels: Sequence[dict], layer: str, category: str | None = None) -> list[UnitSet]:
    """Each category's detectors (precision >= DETECTOR_PRECISION) of ``layer``, most detectors first, or
    ``category``'s only; ValueError naming the categories (with detectors) when it is unknown or has none."""
    detectors = [u for u in labels if u.get("layer", layer) == layer and u["category"]
                 and u["precision"] >= DETECTOR_PRECISION]
    counts = Counter(u["category"] for u in detectors)
    if category is not None:
        known = sorted(category_by_name())
        if category not in known:
            raise ValueError(f"unknown category {category!r}; the categories are {', '.join(known)}")
        if category not in counts:
            raise ValueError(f"{layer} has no {category} detectors; categories with detectors: "
                             f"{', '.join(f'{c} ({n})' for c, n in counts.most_common()) or 'none'}")
        counts = Counter({category: counts[category]})
    return [UnitSet(tuple(sorted(u["unit"] for u in detectors if u["category"] == c)), c)
            for c, _ in counts.most_common()]


def layer_units(split: LayerSplit, input_size: int, device) -> int:
    """How many units (channels) the layer has, from one forward pass of a blank image."""
    with torch.inference_mode():
        return int(split.trunk(torch.zeros(1, 3, input_size, input_size, device=device)).shape[1])


def ablate_run(run_dir: str | Path, layer: str = ABLATION.layer, units: Sequence[int] | None = None,
               category: str | None = None, each_unit: bool = False, settings: AblationSettings = ABLATION,
               device: str | torch.device = "cpu", show_progress: bool = True) -> dict:
    """Ablate ``units``, ``category``'s detectors, or (neither given) each category's detectors, of a
    trained run's ``layer`` on its dataset's test split. ValueError / FileNotFoundError name bad input."""
    run = RunFolder(run_dir)
    run_dir = run.path
    model, info = run.network(device)
    split = split_at(model, layer)
    num_units = layer_units(split, info.crop_size, device)
    if units is not None:
        ablation_mask(units, num_units)
        sets = [UnitSet(tuple(units))]
    else:
        labels = run.dissection
        if labels is None:
            raise FileNotFoundError(f"{run_dir}: no dissection.json to find detectors in; run `ambient dissect "
                                    f"{run_dir} --truth` (or --masks) first, or name --units")
        dissected = {u.get("layer") for u in labels}
        if layer not in dissected:
            raise ValueError(f"{run_dir}/dissection.json labels the units of {', '.join(map(str, dissected))}, "
                             f"not {layer}; dissect {layer} or name --units")
        sets = detector_sets(labels, layer, category)
        if not sets and not each_unit:      # each unit alone is still measured when there are no detectors
            raise ValueError(f"{layer} of {run_dir} has no detectors (precision >= {DETECTOR_PRECISION:.0%}) to ablate")
    data_dir = Path(run.info.get("data_dir", ""))
    if not ds.is_dataset(data_dir):
        raise FileNotFoundError(f"{run_dir}/run.json: its dataset {data_dir} is not there")
    records = ds.load_manifest(data_dir)
    labels_of = load_targets(data_dir, info.label_kind, np.array([r.split for r in records]))
    test = [records[row] for row in labels_of.test_index]
    heard_of = heard_reader(data_dir)
    categories = [s.category for s in sets if s.category]
    heard = [set(heard_of(r)) for r in test] if heard_of and categories else None
    bar = tqdm(total=len(test), desc=f"ablating {layer}", unit="frame", disable=not show_progress)

    def batches():
        for positions, frames in pl.stream_pool(data_dir, test, info.frame_size, settings.batch_size, device):
            with torch.inference_mode():       # the test-time input: centre crops, as training evaluates
                features = split.trunk(info.prepare_images(frames))
            rows = labels_of.test_index[positions]
            groups = {c: np.array([c in heard[p] for p in positions.tolist()]) for c in categories} if heard else {}
            bar.update(len(positions))
            yield features, labels_of.targets[rows], groups

    result = measure_ablations(split.head, batches(), sets, num_units, labels_of.num_outputs, labels_of.multilabel,
                               settings.random_repeats, settings.seed, each_unit, truth=heard is not None)
    bar.close()
    return {"layer": layer, "label_kind": info.label_kind, "test_frames": len(test), "units_in_layer": num_units,
            "random_repeats": settings.random_repeats, "seed": settings.seed, "world_truth": heard is not None, **result}


def single_unit_links(ablation: dict, top: int = ABLATION.helps_predict
                      ) -> tuple[dict[int, list[dict]], dict[int, list[dict]]]:
    """From ``single_units`` (``--each-unit``): per unit, the ``top`` sound labels that lose most with it alone off,
    and per label the ``top`` units whose ablation costs it most; losses > 0 only, largest first.

    A loss is the drop in the label's mean true-label probability over its test frames ("probability_drop");
    its accuracy drop ("drop") is given beside it. Ranked by probability, not accuracy: one unit off barely
    moves a frame's probabilities, and a label whose few correct frames sit at the decision boundary loses all
    of them to almost any unit (seed 0's cluster 14: 3 of 17 frames, lost to 122 of 256 units).
    """
    base, base_probability = ablation["baseline"]["per_label"], ablation["baseline"].get("per_label_probability")
    losses = []
    for row in ablation.get("single_units", []):
        for label, after in enumerate(row.get("per_label_probability") or row["per_label"]):
            before = (base_probability or base)[label]
            if after is None or before is None or before - after <= 0:
                continue
            accuracy = None if base[label] is None else base[label] - row["per_label"][label]
            losses.append((row["unit"], label, before - after, accuracy))
    losses.sort(key=lambda d: (-d[2], d[0], d[1]))
    helps: dict[int, list[dict]] = {}
    depends: dict[int, list[dict]] = {}
    for unit, label, probability_drop, drop in losses:
        if len(helps.setdefault(unit, [])) < top:
            helps[unit].append({"index": label, "probability_drop": probability_drop, "drop": drop})
        if len(depends.setdefault(label, [])) < top:
            depends[label].append({"unit": unit, "probability_drop": probability_drop, "drop": drop})
    return helps, depends
