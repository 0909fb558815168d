"""Sound labels: k-means clusters and PCA binary codes, fitted on the training split."""
import numpy as np
import pytest

import model.sound.labels as labels
from model.data import dataset
from model.kmeans import cluster_labels
from model.sound.labels import binary_codes, make_labels


def _blobs(per_blob=40, k=4, dim=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, dim))
    truth = np.repeat(np.arange(k), per_blob)
    return centres[truth] + rng.normal(0, 0.5, (len(truth), dim)), truth


def test_kmeans_recovers_separated_clusters_and_labels_test_frames():
    x, truth = _blobs()
    train = np.arange(len(x)) % 5 != 0            # every fifth frame is test: it is labelled, never fitted
    result = cluster_labels(x, train, k=4, seed=1, restarts=2)
    # Same partition as the truth, up to renaming clusters.
    pairs = set(zip(truth.tolist(), result.labels.tolist()))
    assert len(pairs) == 4 and len({b for _, b in pairs}) == 4
    assert result.centroids.shape == (4, 20)
    np.testing.assert_allclose(result.distances, np.linalg.norm(x - result.centroids[result.labels], axis=1),
                               rtol=1e-4, atol=1e-4)
    median = np.median(result.distances[train])
    np.testing.assert_array_equal(result.keep, train & (result.distances <= median))
    assert not result.keep[~train].any()
    again = cluster_labels(x, train, k=4, seed=1, restarts=2)
    np.testing.assert_array_equal(again.labels, result.labels)


def test_centroids_come_from_the_training_split_only():
    x, _ = _blobs(k=2)
    train = np.zeros(len(x), bool)
    train[:40] = True                              # only blob 0 trains
    result = cluster_labels(x, train, k=1, seed=0, restarts=1)
    np.testing.assert_allclose(result.centroids[0], x[:40].mean(0), atol=1e-4)


def test_kmeans_rejects_impossible_requests():
    x, _ = _blobs(per_blob=3, k=2)
    with pytest.raises(ValueError, match="cannot make 7 clusters from 6 training frames"):
        cluster_labels(x, np.ones(len(x), bool), k=7)
    with pytest.raises(ValueError, match="training split is empty"):
        cluster_labels(x, np.zeros(len(x), bool), k=2)


def test_binary_codes_threshold_the_principal_projections():
    rng = np.random.default_rng(0)
    # Variance falls along the axes, so the principal components are the axes in order.
    x = rng.normal(size=(500, 8)) * np.array([32, 16, 8, 2, 1, 1, 1, 1]) + 3.0
    train = np.arange(500) < 400
    result = binary_codes(x, train, bits=3)
    assert result.codes.shape == (500, 3) and result.codes.dtype == np.uint8
    np.testing.assert_allclose(np.abs(result.components), np.eye(8)[:3], atol=0.1)
    np.testing.assert_allclose(result.components @ result.components.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(result.mean, x[train].mean(0), atol=1e-4)
    expected = ((x - result.mean) @ result.components.T > 0).astype(np.uint8)
    np.testing.assert_array_equal(result.codes, expected)
    assert 0.4 < result.codes[train].mean() < 0.6     # thresholding at the centre splits each bit evenly
    with pytest.raises(ValueError, match="cannot make 9 bits"):
        binary_codes(x, train, bits=9)


def _write_dataset(root, n=60):
    x, _ = _blobs(per_blob=n // 3, k=3, dim=502)
    records = [dataset.FrameRecord(i, f"v{i // 5}", f"v{i // 5}.mp4", i % 5, float(i % 5), f"img{i}.jpg",
                                   f"clip{i}.mp3", "test" if (i // 5) % 4 == 0 else "train", False)
               for i in range(len(x))]
    dataset.write_manifest(root, records, x, np.random.default_rng(1).normal(size=(len(x), 32)))
    return x


def test_make_labels_writes_every_kind(tmp_path, monkeypatch):
    weights = np.full(502, 0.5, np.float32)
    monkeypatch.setattr(labels, "checked_texture_scale", lambda dim: weights)
    x = _write_dataset(tmp_path)
    cluster = np.load(make_labels(tmp_path, "cluster", k=3))
    assert str(cluster["kind"]) == "cluster" and int(cluster["k"]) == 3
    assert cluster["labels"].shape == (60,) and cluster["keep"].dtype == bool
    np.testing.assert_array_equal(cluster["weights"], weights)
    # Centroids live in the weighted space.
    assigned = cluster["centroids"][cluster["labels"]]
    np.testing.assert_allclose(np.linalg.norm(x * 0.5 - assigned, axis=1), cluster["distances"], rtol=1e-3)
    binary = np.load(make_labels(tmp_path, "binary"))
    assert binary["codes"].shape == (60, 30) and binary["components"].shape == (30, 502)
    spectrum = np.load(make_labels(tmp_path, "spectrum"))
    assert spectrum["codes"].shape == (60, 30) and spectrum["mean"].shape == (32,)
    with pytest.raises(ValueError, match="unknown label kind"):
        make_labels(tmp_path, "colour")
    with pytest.raises(ValueError, match="cannot make 100 clusters"):
        make_labels(tmp_path, "cluster", k=100)


def test_scene_labels_need_a_generated_world(tmp_path):
    _write_dataset(tmp_path)          # no ingest report naming a world's videos folder
    with pytest.raises(FileNotFoundError, match="scene labels need a generated world"):
        make_labels(tmp_path, "scene")
