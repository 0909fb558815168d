"""Similar units, `ambient compare` and `ambient visualize` on a run (issue 38), on test_units' tiny pool and
network."""
from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from sqlalchemy import select
from typer.testing import CliRunner

from app_helpers import database_url
from backend.cli import app
from backend.db.models import Unit
from backend.db.session import session_factory, upgrade_db
from backend.publish import publish_run
from model.network.run import FINAL_MODEL, units_file
from model.settings import VISUALIZE
from model.units.compare import compare_maxima, compare_runs, read_pool_maxima, unit_correlations
from model.units.top_images import extract_units
from model.units.visualize import visualize_run
from test_units import SETTINGS, make_pool


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """24 frames of 6 videos, 20 in the test split, and a random tiny CaffeNet whose units are extracted."""
    pool = make_pool(tmp_path_factory.mktemp("compare"), 24, 20)
    extract_units(pool.run, pool.data, SETTINGS, show_progress=False)
    return pool


def live_units(run_dir) -> np.ndarray:
    """The units that fire differently on different pool images (a silent unit correlates with nothing)."""
    _, maxima = read_pool_maxima(units_file(run_dir, "conv5"))
    return np.flatnonzero(maxima.std(axis=0) > 1e-9)


def test_units_files_keep_the_pools_maxima_and_publish_similar_units(pool):
    frames, maxima = read_pool_maxima(units_file(pool.run, "conv5"))
    assert frames.tolist() == list(range(20)) and maxima.shape == (20, 256)
    with np.load(units_file(pool.run, "conv5")) as saved:      # a unit's best pool image is its first top image
        assert maxima.max(axis=0) == pytest.approx(saved["scores"][:, 0], rel=1e-5)
    url = database_url(pool.root, "similar.db")
    publish_run(pool.run, upgrade_db(url))
    unit = int(live_units(pool.run)[0])
    with np.errstate(invalid="ignore"):     # a silent unit: no r (nan), 0 in ours
        expected = np.nan_to_num(np.corrcoef(maxima.T)[unit])
    expected[unit] = -np.inf
    with session_factory(upgrade_db(url))() as db:
        similar = db.scalar(select(Unit.similar).where(Unit.index == unit))
    assert len(similar) == 8 and unit not in [s["unit"] for s in similar]
    assert [s["unit"] for s in similar] == np.argsort(-expected, kind="stable")[:8].tolist()
    assert [s["r"] for s in similar] == pytest.approx(np.sort(expected)[::-1][:8], abs=1e-4)


def test_a_run_compared_with_itself_matches_every_unit_to_itself_with_r_1(pool):
    result = compare_runs(pool.run, pool.run)
    live = live_units(pool.run)
    assert len(live) > 100
    for unit in live:
        row = result["units"][unit]
        assert row["match"] == unit and row["r"] == pytest.approx(1.0) and not row["silent"]
    assert all(result["units"][u]["silent"] for u in set(range(256)) - set(live.tolist()))


def shuffled_copy(pool, root, permutation: torch.Tensor):
    """The pool's network with conv5's channels reordered (within each of its two groups), the layers on either
    side rewired so that it computes the same function: channel j of the copy is channel permutation[j]."""
    model = pool.info.build_model().eval()
    model.load_state_dict(pool.model.state_dict())
    conv, norm = model.conv5[0], model.conv5[1]
    with torch.no_grad():
        conv.weight.copy_(conv.weight[permutation])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(norm, name).copy_(getattr(norm, name)[permutation])
        fc = model.fc6[0]
        side = int(round((fc.weight.shape[1] / 256) ** 0.5))
        fc.weight.copy_(fc.weight.view(-1, 256, side, side)[:, permutation].reshape(fc.weight.shape))
    run = root / "shuffled"
    run.mkdir()
    torch.save({"model": model.state_dict(), "run": asdict(pool.info), "step": 0}, run / FINAL_MODEL)
    return run, model


def test_a_channel_shuffled_copy_is_matched_back_to_the_original_order(pool, tmp_path):
    generator = torch.Generator().manual_seed(3)
    permutation = torch.cat([torch.randperm(128, generator=generator), 128 + torch.randperm(128, generator=generator)])
    run, model = shuffled_copy(pool, tmp_path, permutation)
    frames = torch.randn(2, 3, 99, 99)
    with torch.no_grad():      # the same network: the same output, its conv5 channels reordered
        assert torch.allclose(model(frames), pool.model(frames), atol=1e-4)
        assert torch.allclose(model.forward_features(frames, "conv5"),
                              pool.model.forward_features(frames, "conv5")[:, permutation], atol=1e-5)
    result = compare_runs(pool.run, run, pool=pool.data, split="test")
    original_in_copy = torch.argsort(permutation).tolist()       # where each original channel went
    for unit in live_units(pool.run):
        assert result["units"][unit]["match"] == original_in_copy[unit]
        assert result["units"][unit]["r"] == pytest.approx(1.0, abs=1e-4)


def test_a_different_network_matches_worse_and_layers_of_other_sizes_are_refused():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    b = a[:, [2, 0, 1, 5, 3, 4]] + 0.1 * rng.normal(size=(200, 6))
    result = compare_maxima(a, b, [None] * 6, [None] * 6)
    assert [u["match"] for u in result["units"]] == [1, 2, 0, 4, 5, 3]
    assert unit_correlations(a, rng.normal(size=(200, 6))).max() < 0.3
    with pytest.raises(ValueError, match="the layers differ in size: A has 6 units, B 4"):
        compare_maxima(a, b[:, :4], [None] * 6, [None] * 4)


def test_compare_and_visualize_name_what_exists_on_bad_input(pool, tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["compare", str(pool.run), str(pool.run), "--pool", str(empty), "--device", "cpu"])
    assert result.exit_code == 1 and f"{empty}: no .jpg/.jpeg/.png images" in result.output
    assert "no manifest" in result.output
    result = runner.invoke(app, ["compare", str(pool.run), str(pool.run), "--layer", "conv4", "--device", "cpu"])
    assert result.exit_code == 1 and "no units of conv4 (analysed: conv5)" in result.output
    result = runner.invoke(app, ["visualize", str(pool.run), "--units", "3 300", "--no-publish", "--device", "cpu"])
    assert result.exit_code == 1 and "unit 300 out of range: layer conv5 has 256 units (0-255)" in result.output
    result = runner.invoke(app, ["visualize", str(pool.run), "--clusters", "9", "--no-publish", "--device", "cpu"])
    assert result.exit_code == 1
    assert "sound cluster 9 out of range: the network has 4 sound clusters (0-3)" in result.output
    result = runner.invoke(app, ["visualize", str(pool.run), "--layer", "conv9", "--no-publish", "--device", "cpu"])
    assert result.exit_code == 1 and "no layer 'conv9'" in result.output and "conv5" in result.output


def test_visualisations_are_written_scored_and_published(pool, tmp_path):
    settings = replace(VISUALIZE, steps=3, size=67, batch=2)
    index = visualize_run(pool.run, "conv5", [0, 5, 9], [1], settings)
    assert [(e["unit"], e["file"]) for e in index["units"]] == [(0, "conv5_unit0000.png"), (5, "conv5_unit0005.png"),
                                                               (9, "conv5_unit0009.png")]
    with np.load(units_file(pool.run, "conv5")) as saved:
        top = saved["scores"][:, 0]
    for entry in index["units"]:
        assert entry["top_activation"] == pytest.approx(top[entry["unit"]])
        assert entry["ratio"] == pytest.approx(entry["activation"] / top[entry["unit"]])
    assert 0 < index["clusters"][0]["probability"] <= 1
    visualize_run(pool.run, "conv5", [5], [], settings)       # a later run replaces unit 5's and keeps the others
    url = database_url(pool.root, "visualized.db")
    publish_run(pool.run, upgrade_db(url))
    with session_factory(upgrade_db(url))() as db:
        pngs = dict(db.execute(select(Unit.index, Unit.visualization_png)).all())
    assert sorted(i for i, png in pngs.items() if png) == [0, 5, 9]
    assert pngs[5] == (pool.run / "visualizations" / "conv5_unit0005.png").read_bytes()
    assert pngs[5].startswith(b"\x89PNG")
