"""What the unit page shows beyond the top images: each unit's activation histogram over the pool and
images near lower quantiles, masked like the top images, from `ambient units` through publish to the
page and the API."""
from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app_helpers import add_user, database_url, login
from backend.app import create_app
from backend.config import Settings
from backend.db.models import Unit, UnitSample
from backend.db.session import session_factory, upgrade_db
from model.units.top_images import activation_histograms, quantile_samples
from test_units import CROP, SETTINGS, extract_and_publish, pool  # noqa: F401  (pool is a fixture)

VIEW_SETTINGS = replace(SETTINGS, sample_quantiles=(0.9, 0.5), samples_per_quantile=3, histogram_bins=8)


def test_quantile_samples_are_the_images_ranked_around_each_quantile():
    maxima = np.stack([np.arange(20.0), -np.arange(20.0)], axis=1)       # unit 0 grows with the position, unit 1 not
    positions = quantile_samples(maxima, (0.99, 0.5), 4)
    assert positions[0].tolist() == [19, 18, 17, 16, 11, 10, 9, 8]        # strongest first within a quantile
    assert positions[1].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    small = quantile_samples(maxima[:3], (0.5,), 4)                      # a pool smaller than the samples
    assert small[0].tolist() == [2, 1, 0, -1]
    # 12 images and quantiles 9% apart: one image each, never the same image at two quantiles.
    twelve = quantile_samples(maxima[:12], (0.99, 0.9, 0.5), 10)
    assert twelve[0].tolist() == [11] + [-1] * 9 + [10] + [-1] * 9 + [6] + [-1] * 9


def test_activation_histograms_count_every_image():
    maxima = np.random.default_rng(0).normal(size=(500, 3))
    counts, edges = activation_histograms(maxima, 10)
    assert counts.shape == (3, 10) and edges.shape == (3, 11)
    assert counts.sum(axis=1).tolist() == [500, 500, 500]
    assert edges[:, 0] == pytest.approx(maxima.min(axis=0)) and edges[:, -1] == pytest.approx(maxima.max(axis=0))


@pytest.fixture(scope="module")
def published(pool):  # noqa: F811
    url = database_url(pool.root, "views.db")
    run = pool.root / "views-run"
    run.mkdir()
    (run / "model.pt").write_bytes((pool.run / "model.pt").read_bytes())
    extract_and_publish(run, pool.data, url, settings=VIEW_SETTINGS)
    add_user(url, "ann")
    return url


def test_samples_and_histograms_are_published_masked(pool, published):  # noqa: F811
    frames = torch.stack([pool.info.prepare_images(torch.from_numpy(
        np.array(Image.open(pool.data / r.image))).permute(2, 0, 1)[None])[0] for r in pool.records[:20]])
    with torch.no_grad():
        maxima = pool.model.forward_features(frames, "conv5").amax(dim=(2, 3)).numpy()     # (20 test frames, 256)
    with session_factory(upgrade_db(published))() as db:
        assert db.scalar(select(func.count()).select_from(UnitSample)) == 256 * 2 * 3
        unit = db.scalar(select(Unit).where(Unit.index == 7))
        assert sum(unit.histogram["counts"]) == 20 and len(unit.histogram["edges"]) == 9
        assert unit.histogram["edges"][0] == pytest.approx(maxima[:, 7].min(), rel=1e-3)
        samples = db.scalars(select(UnitSample).where(UnitSample.unit_id == unit.id)
                             .order_by(UnitSample.quantile.desc(), UnitSample.rank)).all()
        expected = quantile_samples(maxima, (0.9, 0.5), 3)[7]
        assert [s.frame.row for s in samples] == expected.tolist()
        assert [s.quantile for s in samples] == [0.9] * 3 + [0.5] * 3
        assert [s.activation for s in samples] == pytest.approx(maxima[expected, 7].tolist(), rel=1e-3)
        masked = Image.open(io.BytesIO(samples[0].masked_jpeg))
        assert masked.size == (CROP, CROP)
        original = np.asarray(Image.open(pool.data / samples[0].frame.image_path))[6:6 + CROP, 6:6 + CROP]
        assert np.asarray(masked).astype(float).mean() < original.astype(float).mean()      # darkened outside


def test_unit_page_and_api_show_the_histogram_and_samples(published):
    with TestClient(create_app(Settings(database_url=published))) as client:
        login(client, "ann")
        unit = client.get("/api/v1/runs/1/units/conv5/7").json()
        assert sum(unit["histogram"]["counts"]) == 20
        assert [(s["quantile"], len(s["images"])) for s in unit["samples"]] == [(0.9, 3), (0.5, 3)]
        sample = unit["samples"][1]["images"][0]
        assert client.get(sample["url"]).headers["content-type"] == "image/jpeg"
        assert sample["clip_url"] == f"/frames/{sample['frame']}/clip"
        page = client.get("/runs/1/units/conv5/7", headers={"accept": "text/html"}).text
        assert 'id="histogram"' in page and 'class="plotly-figure"' in page
        assert page.count('src="/samples/') == 6 and 'id="samples-90"' in page and 'id="samples-50"' in page
        assert client.get("/samples/999999").status_code == 404


def test_the_histograms_labels_stand_apart_when_their_lines_nearly_meet():
    from types import SimpleNamespace
    from backend.app.explore import histogram_figure
    page = SimpleNamespace(unit=SimpleNamespace(histogram={"edges": [0.0, 1.0, 2.0, 3.0], "counts": [50, 9, 1]}),
                           images=[SimpleNamespace(activation=a) for a in (2.9, 2.5, 2.41)],
                           samples={0.99: [SimpleNamespace(activation=2.4)], 0.5: [SimpleNamespace(activation=0.8)]})
    labels = {a.text: a for a in histogram_figure(page).layout.annotations}
    assert set(labels) == {"top 3", "99th pct", "50th pct"}
    assert labels["top 3"].x == 2.41 and labels["99th pct"].x == 2.4
    heights = [a.y for a in labels.values()]
    assert min(abs(a - b) for i, a in enumerate(heights) for b in heights[i + 1:]) >= 0.1   # one line each
