"""When do the detectors appear? Each checkpoint ``ambient train --keep-checkpoints`` kept, dissected over
the same pool as the final units (``ambient dissect RUN_DIR --truth --checkpoints``, or ``--masks``).

Per kept step: the held-out accuracy training logged there, the detectors (total, sounding, silent, per
category); and for each final detector (RUN_DIR/dissection.json) the first step at which its precision
for its final category reached ``DETECTOR_PRECISION``. A checkpoint that is missing or does not load is
named in ``skipped`` and the others are dissected. Entry point: ``dissect_checkpoints``.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.data import pool as pl
from model.units.dissect import detector_counts, label_units, score_units, truth_labels, truth_scores, units_layer
from model.units.activations import TopImages
from model.network.run import FINAL_MODEL, RunFolder, kept_checkpoints, read_dissection, read_metrics
from model.units.segmentation import SegmentationClass
from model.settings import DETECTOR_PRECISION, UNITS, UnitSettings
from model.units.top_images import load_network, pool_pass, video_index


def step_summary(step: int, accuracy: float | None, labels: Sequence) -> dict:
    """One kept step's row: its accuracy and its detectors, counted as ``ambient dissect`` counts them."""
    counts = detector_counts(labels, DETECTOR_PRECISION)
    per_category = Counter(label.category for label in labels
                           if label.category and label.precision >= DETECTOR_PRECISION)
    return {"step": step, "accuracy": accuracy,
            "detectors": {"total": counts["detectors"], "sounding": counts["sounding"], "silent": counts["silent"],
                          "per_category": dict(per_category.most_common())}}


def first_steps(final: Sequence[dict], precisions: Sequence[tuple[int, Callable[[int, str], float]]]) -> list[dict]:
    """For each final detector, the first kept step at which its precision for its final category reached
    ``DETECTOR_PRECISION`` (None: never at a kept step). ``precisions``: (step, precision(unit, category))."""
    rows = []
    for label in final:
        if not label["category"] or label["precision"] < DETECTOR_PRECISION:
            continue
        first = next((step for step, precision in precisions
                      if precision(label["unit"], label["category"]) >= DETECTOR_PRECISION), None)
        rows.append({"unit": label["unit"], "category": label["category"], "precision": label["precision"],
                     "sounding": label.get("sounding", False), "first_step": first})
    return rows


def _final_step(run_dir: Path) -> int | None:
    """The step of RUN_DIR/model.pt (the network ``ambient units`` analysed); None without one."""
    try:
        return int(torch.load(Path(run_dir) / FINAL_MODEL, map_location="cpu", weights_only=True)["step"])
    except (OSError, KeyError, RuntimeError, ValueError):
        return None


def dissect_checkpoints(run_dir: str | Path, layer: str | None = None, truth_of: Callable | None = None,
                        masks: dict[int, Path] | None = None, classes: Sequence[SegmentationClass] = (),
                        settings: UnitSettings = UNITS, device: str | torch.device = "cpu",
                        show_progress: bool = True) -> dict:
    """Dissect every kept checkpoint of RUN_DIR over its units' pool: against the world's truth
    (``truth_of(record)``: the objects in a frame) or against label maps (``masks``: pool row -> PNG, and
    ``classes``). RUN_DIR/dissection.json must hold the final labels. Returns emergence.json's content."""
    run = RunFolder(run_dir)
    run_dir = run.path
    layer = units_layer(run, layer)
    path = run.units_file(layer)
    with np.load(path) as data:
        meta, top = json.loads(str(data["meta"])), int(data["frame_ids"].shape[1])
        # The final network's pass over the pool is the units file's: a kept checkpoint of the final step reuses it.
        stored = TopImages(torch.from_numpy(data["scores"]), torch.from_numpy(data["frame_ids"]),
                           torch.from_numpy(data["maps"].astype(np.float32)))
        thresholds = torch.from_numpy(data["thresholds"]) if "thresholds" in data.files else None
    if meta.get("model_spec"):
        raise ValueError(f"{path}: units of {meta['model_spec']}, not of this run's training: no checkpoints")
    checkpoints = kept_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir}: no kept checkpoints (checkpoints/step_*.pt); train with "
                                f"`ambient train ... --keep-checkpoints N`")
    final = read_dissection(run_dir)
    settings = replace(settings, layer=layer, top=top, split=meta.get("split", settings.split))
    records = pl.pool_records(meta["data_dir"], settings.split)
    videos = video_index(records)
    accuracy = {row["step"]: row.get("test_accuracy") for row in read_metrics(run_dir)}
    final_step = _final_step(run_dir)
    steps, skipped, precisions = [], [], []
    for step, checkpoint in checkpoints:
        try:
            network = load_network(run, layer, device=device, checkpoint=checkpoint)
        except Exception as error:    # noqa: BLE001: a missing or unreadable checkpoint is named and skipped
            skipped.append({"step": step, "checkpoint": str(checkpoint), "reason": f"{type(error).__name__}: {error}"})
            continue
        if step == final_step and (masks is None or thresholds is not None):
            found = stored
        else:
            with tqdm(total=len(records), desc=f"step {step}", unit="frame", disable=not show_progress) as bar:
                passed = pool_pass(network, Path(meta["data_dir"]), records, videos, settings, device=device,
                                   progress=bar.update)
            found, thresholds_now = passed.top.result(), passed.quantile.result()
        if masks is None:
            scores = truth_scores(found.frame_ids.numpy(), found.maps, meta, truth_of, settings)
            labels = truth_labels(scores)
            precisions.append((step, lambda unit, category, s=scores: s[unit].get(category, (0.0, 0.0))[0]))
        else:
            mask_scores = score_units(network, meta, found.frame_ids.numpy(), found.maps,
                                      thresholds if found is stored else thresholds_now,
                                      records, masks, classes, settings, device)
            labels = label_units(mask_scores, settings)
            index = {c.name: i for i, c in enumerate(mask_scores.classes)}
            precisions.append((step, lambda unit, category, p=mask_scores.precision:
                               float(p[unit, index[category]]) if category in index else 0.0))
        steps.append(step_summary(step, accuracy.get(step), labels))
    if not steps:
        raise ValueError(f"{run_dir}: none of the {len(checkpoints)} kept checkpoints loads: "
                         + "; ".join(f"{s['checkpoint']} ({s['reason']})" for s in skipped))
    return {"layer": layer, "source": "truth" if masks is None else "masks", "pool_size": len(records),
            "split": settings.split, "steps": steps, "detectors": first_steps(final, precisions), "skipped": skipped}
