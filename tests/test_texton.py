"""Visual texton histograms (model/network/texton.py) and `ambient labels --kind texton`, the Texton-CNN control."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from model.data import dataset as ds
from model.network import texton
from model.data.frames import load_targets
from model.sound.labels import make_labels
from model.settings import TEXTON

SMALL = replace(TEXTON, frame_size=48, textons=8, learn_pixels=2_000, batch_size=8)


def test_filter_bank_is_zero_mean_unit_l1_oriented_filters():
    bank = texton.filter_bank(SMALL)
    # Per scale: an edge and a bar filter for each orientation, and one centre-surround filter.
    assert bank.shape[:2] == (len(SMALL.sigmas) * (2 * SMALL.orientations + 1), 1)
    assert bank.shape[-1] % 2 == 1
    torch.testing.assert_close(bank.sum((1, 2, 3)), torch.zeros(len(bank)), atol=1e-5, rtol=0)
    torch.testing.assert_close(bank.abs().sum((1, 2, 3)), torch.ones(len(bank)))


def _stripes(vertical: bool, size: int = 48, period: int = 6) -> np.ndarray:
    wave = ((np.arange(size) // (period // 2)) % 2 * 200 + 28).astype(np.uint8)
    image = np.tile(wave, (size, 1)) if vertical else np.tile(wave[:, None], (1, size))
    return np.repeat(image[..., None], 3, axis=2)


def test_oriented_filters_answer_edges_across_their_orientation():
    bank = texton.filter_bank(SMALL)
    images = torch.from_numpy(np.stack([_stripes(True), _stripes(False)])).permute(0, 3, 1, 2)
    energy = texton.filter_responses(images, bank, stride=1).abs().mean((1, 2))     # (2, F)
    # Edge filter i (index 2 i) differentiates across angle pi i / orientations: filter 0 along x sees
    # vertical stripes; the one at 90 degrees (i = orientations / 2) sees horizontal ones.
    across_y = 2 * (SMALL.orientations // 2)
    assert energy[0, 0] > 5 * energy[1, 0]
    assert energy[1, across_y] > 5 * energy[0, across_y]


def test_histograms_count_nearest_textons_and_sum_to_one():
    textons = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    responses = torch.tensor([[[[0.1, 0.2], [9.0, 1.0]], [[0.5, 11.0], [10.0, 0.0]]]])     # (1, 2, 2, 2)
    histogram = texton.texton_histogram(responses, textons)
    torch.testing.assert_close(histogram, torch.tensor([[0.25, 0.5, 0.25]]))


def _write_frames(root, patterns):
    """DATA_DIR with one frame per pattern (every 4th frame held out)."""
    records = []
    for i, pixels in enumerate(patterns):
        image = f"videos/v{i}/frame_00.jpg"
        (root / "videos" / f"v{i}").mkdir(parents=True)
        Image.fromarray(pixels).save(root / image, quality=95)
        records.append(ds.FrameRecord(i, f"v{i}", f"v{i}.mp4", 0, 1.0, image, f"videos/v{i}/clip_00.mp3",
                                      "test" if i % 4 == 3 else "train", False))
    ds.write_manifest(root, records, np.zeros((len(records), 502)), np.zeros((len(records), 32)))
    return records


def _patterns(n: int):
    """Alternately vertical stripes (shifted) and flat grey with a little noise."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(np.roll(_stripes(True, 64, 8), i, axis=1))
        else:
            out.append(np.clip(128 + rng.normal(0, 3, (64, 64, 3)), 0, 255).astype(np.uint8))
    return out


def test_texton_labels_group_frames_by_their_texture(tmp_path):
    records = _write_frames(tmp_path, _patterns(16))
    paths = [tmp_path / r.image for r in records]
    train = np.array([r.split == "train" for r in records])
    histograms, textons = texton.frame_texton_histograms(paths, train, SMALL)
    assert histograms.shape == (16, SMALL.textons) and textons.shape == (SMALL.textons, len(texton.filter_bank(SMALL)))
    np.testing.assert_allclose(histograms.sum(1), 1.0, rtol=1e-5)
    # Stripes are nearer stripes than flat frames.
    distance = np.linalg.norm(histograms[:, None] - histograms[None], axis=2)
    assert distance[0, 2] < distance[0, 1] and distance[1, 3] < distance[1, 2]
    labels = texton.texton_labels(paths, train, 2, settings=SMALL)
    assert len(set(labels["labels"][0::2])) == 1 and len(set(labels["labels"][1::2])) == 1
    assert labels["labels"][0] != labels["labels"][1]
    with pytest.raises(ValueError, match="training split is empty"):
        texton.frame_texton_histograms(paths, np.zeros(16, bool), SMALL)


def test_labels_kind_texton_trains_like_clusters(tmp_path, monkeypatch):
    monkeypatch.setattr(texton, "TEXTON", SMALL)       # the settings make_labels uses, made small
    records = _write_frames(tmp_path, _patterns(16))
    saved = np.load(make_labels(tmp_path, "texton", k=2))
    assert str(saved["kind"]) == "texton" and int(saved["k"]) == 2
    assert saved["labels"].shape == (16,) and saved["histograms"].shape == (16, SMALL.textons)
    # As for sound clusters, training keeps the training frames nearest their centroid.
    assert not saved["keep"][[r.split == "test" for r in records]].any()
    targets = load_targets(tmp_path, "texton", np.array([r.split for r in records]))
    assert targets.num_outputs == 2 and not targets.multilabel
    assert targets.targets.tolist() == saved["labels"].tolist()
