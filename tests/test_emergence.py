"""`ambient dissect --checkpoints` (model/units/emergence.py): every kept checkpoint dissected over the same pool."""
import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from model.units.dissect import detector_counts, dissect, write_dissection
from model.units.emergence import dissect_checkpoints
from model.network.run import FINAL_MODEL, KEPT_CHECKPOINTS, kept_checkpoint_file
from model.settings import DETECTOR_PRECISION
from model.units.top_images import extract_units
from test_units import SETTINGS, _square, make_pool


def truth(record):
    mask = _square(record.frame_index)[..., 0] == 250
    return [SimpleNamespace(category="dog", mask=mask)]      # frames are already FRAME x FRAME


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run whose final weights are kept at step 20, other weights at step 10, and an unreadable step 15."""
    pool = make_pool(tmp_path_factory.mktemp("emergence"), 24, 20)
    final = torch.load(pool.run / FINAL_MODEL, weights_only=True)
    torch.manual_seed(1)
    early = pool.info.build_model().state_dict()
    for step, state in ((10, {**final, "model": early, "step": 10}), (20, {**final, "step": 20})):
        kept_checkpoint_file(pool.run, step).parent.mkdir(exist_ok=True)
        torch.save(state, kept_checkpoint_file(pool.run, step))
    kept_checkpoint_file(pool.run, 15).write_bytes(b"not a checkpoint")
    (pool.run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "test_accuracy": a}) + "\n"
                                                    for s, a in ((10, 0.3), (15, 0.35), (20, 0.4))))
    extract_units(pool.run, pool.data, SETTINGS, show_progress=False)
    labels = dissect(pool.run, truth, "conv5", SETTINGS)
    write_dissection(pool.run, labels, "conv5")
    return SimpleNamespace(pool=pool, labels=labels)


def test_each_kept_checkpoint_is_dissected_and_a_bad_one_named_and_skipped(run):
    result = dissect_checkpoints(run.pool.run, "conv5", truth_of=truth, settings=SETTINGS, show_progress=False)
    assert [s["step"] for s in result["steps"]] == [10, 20]
    assert [s["accuracy"] for s in result["steps"]] == [0.3, 0.4]
    (skipped,) = result["skipped"]
    assert skipped["step"] == 15 and skipped["checkpoint"].endswith("step_0000015.pt") and skipped["reason"]
    # The last kept step is the final network over the same pool: the same detectors as dissection.json.
    counts = detector_counts(run.labels, DETECTOR_PRECISION)
    last = result["steps"][-1]["detectors"]
    assert (last["total"], last["sounding"], last["silent"]) == (counts["detectors"], counts["sounding"],
                                                                 counts["silent"])
    assert counts["detectors"] > 0 and last["per_category"] == {"dog": counts["detectors"]}
    # Each final detector passed 60% at step 10 or, at the latest, at the final step 20.
    assert len(result["detectors"]) == counts["detectors"]
    assert {d["first_step"] for d in result["detectors"]} <= {10, 20}
    assert result["pool_size"] == 20 and result["source"] == "truth"


def test_no_kept_checkpoints_is_a_clear_error(run, tmp_path):
    # The module's run with its units but without its kept checkpoints (copied: extracting units again is slow).
    bare = tmp_path / "run"
    shutil.copytree(run.pool.run, bare, ignore=shutil.ignore_patterns(KEPT_CHECKPOINTS))
    with pytest.raises(FileNotFoundError, match="--keep-checkpoints"):
        dissect_checkpoints(bare, "conv5", truth_of=truth, settings=SETTINGS, show_progress=False)


def test_publish_loads_emergence_and_each_unit_s_ablation(run, tmp_path):
    from sqlalchemy import select

    from app_helpers import database_url
    from backend.db.models import Run, Unit
    from backend.db.session import session_factory, upgrade_db
    from backend.publish import publish_run
    from model.data.dataset import write_json_atomic
    from model.network.run import ablation_file, emergence_file

    emergence = dissect_checkpoints(run.pool.run, "conv5", truth_of=truth, settings=SETTINGS, show_progress=False)
    write_json_atomic(emergence_file(run.pool.run), emergence)
    write_json_atomic(ablation_file(run.pool.run, "conv5"), {
        "layer": "conv5", "baseline": {"accuracy": 0.5, "per_label": [0.5, 0.5, None, 0.5]}, "ablations": [],
        "single_units": [{"unit": u, "accuracy": 0.4, "per_label": [0.5, 0.1 if u == 7 else 0.5, None, 0.3]}
                         for u in range(256)]})
    url = database_url(tmp_path)
    publish_run(run.pool.run, upgrade_db(url))
    with session_factory(upgrade_db(url))() as db:
        stored = db.scalar(select(Run))
        assert stored.emergence["steps"] == emergence["steps"] and "single_units" not in stored.ablation
        helps = {u.index: u.helps_predict for u in db.scalars(select(Unit))}
    # Ranked by the drop in each label's true-label probability (here absent: its accuracy stands in).
    assert [(h["index"], h["drop"]) for h in helps[7]] == [(1, pytest.approx(0.4)), (3, pytest.approx(0.2))]
    assert [(h["index"], h["drop"]) for h in helps[8]] == [(3, pytest.approx(0.2))]
    ablation_file(run.pool.run, "conv5").unlink()
    emergence_file(run.pool.run).unlink()


def test_checkpoints_dissected_against_label_maps(run, tmp_path):
    """``--masks ... --checkpoints``: the same emergence from label maps of the pool's frames (the square is a dog)."""
    import numpy as np
    from PIL import Image

    from model.data import pool as pl
    from model.units.dissect import dissect_masks
    from model.units.segmentation import match_masks, read_classes

    masks = tmp_path / "masks"
    for record in run.pool.records:
        path = (masks / record.image).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((_square(record.frame_index)[..., 0] == 250).astype(np.uint8)).save(path)
    (tmp_path / "classes.csv").write_text("index,name\n1,dog\n")
    classes = read_classes(tmp_path / "classes.csv")
    labels, _ = dissect_masks(run.pool.run, masks, tmp_path / "classes.csv", "conv5", SETTINGS, show_progress=False)
    write_dissection(run.pool.run, labels, "conv5")
    try:
        matched = match_masks(pl.pool_records(run.pool.data, "test"), masks)
        result = dissect_checkpoints(run.pool.run, "conv5", masks=matched, classes=classes, settings=SETTINGS,
                                     show_progress=False)
    finally:
        write_dissection(run.pool.run, run.labels, "conv5")
    counts = detector_counts(labels, DETECTOR_PRECISION)
    assert result["source"] == "masks" and [s["step"] for s in result["steps"]] == [10, 20]
    assert result["steps"][-1]["detectors"]["total"] == counts["detectors"] > 0
    assert len(result["detectors"]) == counts["detectors"]
