"""The streaming top-k and the receptive-field masks (paper 4.1), on synthetic activations."""
import numpy as np
import pytest
import torch
from torch import nn

from model.units.activations import (LayerGeometry, RunningTopK, darken_outside, layer_geometry,
                                     receptive_field_masks)
from model.network.caffenet import CaffeNetBN


def _stream(maps, videos, k, one_per_video, batch):
    top = RunningTopK(k, one_per_video=one_per_video)
    for start in range(0, len(maps), batch):
        ids = torch.arange(start, min(start + batch, len(maps)))
        top.update(maps[ids], ids, videos[ids])
    return top.result()


@pytest.mark.parametrize("batch", [7, 50, 400])
def test_running_topk_equals_brute_force(batch):
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(300, 16, 5, 5, generator=gen)
    videos = torch.arange(300) // 10
    result = _stream(maps, videos, k=20, one_per_video=False, batch=batch)
    scores = maps.amax(dim=(2, 3)).T                                   # (units, images)
    expected_scores, expected_ids = torch.topk(scores, 20, dim=1)
    assert torch.equal(result.scores, expected_scores)
    assert torch.equal(result.frame_ids, expected_ids)
    assert torch.equal(result.maps, maps[expected_ids, torch.arange(16)[:, None]])


def test_one_per_video_keeps_each_videos_best_frame():
    gen = torch.Generator().manual_seed(1)
    maps = torch.randn(200, 8, 3, 3, generator=gen)
    videos = torch.randint(0, 30, (200,), generator=gen)
    result = _stream(maps, videos, k=12, one_per_video=True, batch=33)
    scores = maps.amax(dim=(2, 3)).T
    for unit in range(8):
        best = {}
        for image in range(200):
            v = int(videos[image])
            if v not in best or scores[unit, image] > scores[unit, best[v]]:
                best[v] = image
        expected = sorted(best.values(), key=lambda i: -scores[unit, i])[:12]
        assert result.frame_ids[unit].tolist() == expected
        assert len(set(videos[result.frame_ids[unit]].tolist())) == 12


def test_small_pool_pads_with_missing_frames():
    result = _stream(torch.rand(5, 3, 2, 2), torch.arange(5), k=8, one_per_video=False, batch=2)
    assert (result.frame_ids[:, :5] >= 0).all() and (result.frame_ids[:, 5:] == -1).all()
    assert result.maps.shape == (3, 8, 2, 2)


GEOMETRY = LayerGeometry(rf_size=40, stride=10, offset=5)   # position i centred on pixel 5 + 10 i


def test_one_peak_gives_one_circle_at_its_position():
    act = torch.zeros(1, 6, 6)
    act[0, 2, 4] = 3.0                                        # centre: row 25, column 45
    mask = receptive_field_masks(act, GEOMETRY, image_size=60, radius=8)[0].numpy()
    ys, xs = np.nonzero(mask)
    assert (ys.mean(), xs.mean()) == pytest.approx((25, 45), abs=0.01)
    assert mask.sum() == pytest.approx(np.pi * 8 ** 2, rel=0.1)
    assert mask[25, 45] and mask[25, 53] and not mask[25, 54] and not mask[34, 45]


def test_two_peaks_give_two_circles_and_weak_positions_are_ignored():
    act = torch.zeros(1, 6, 6)
    act[0, 0, 0] = 2.0
    act[0, 5, 5] = 1.5            # >= half the maximum: kept
    act[0, 0, 5] = 0.9            # < half: no circle
    mask = receptive_field_masks(act, GEOMETRY, image_size=60, radius=6)[0].numpy()
    from scipy import ndimage
    labelled, count = ndimage.label(mask)
    assert count == 2
    assert mask[5, 5] and mask[55, 55] and not mask[5, 55] and not mask[30, 30]


def test_silent_map_masks_everything():
    assert not receptive_field_masks(torch.zeros(2, 4, 4), GEOMETRY, 40, radius=10).any()


def test_darken_outside_scales_only_masked_out_pixels():
    images = torch.full((1, 3, 4, 4), 200, dtype=torch.uint8)
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 1, 1] = True
    out = darken_outside(images, masks, keep=0.2)
    assert out[0, :, 1, 1].tolist() == [200, 200, 200] and out[0, 0, 0, 0] == 40


def test_geometry_of_caffenet_and_alexnet_conv5():
    # CaffeNet conv5: 163 px theoretical receptive field, stride 16 (Zhou et al. 2015 list pool5 at 195).
    caffe = layer_geometry(CaffeNetBN(4, fc_width=8), "conv5")
    assert (caffe.rf_size, caffe.stride) == (163, 16)
    assert layer_geometry(CaffeNetBN(4, fc_width=8), "pool5").rf_size == 195
    # Position 6 of the 13x13 map is the centre of a 227 input.
    assert caffe.offset + 6 * caffe.stride == pytest.approx(113)
    from torchvision.models import alexnet
    assert layer_geometry(alexnet(), "features.10").stride == 16
    with pytest.raises(ValueError, match="no layer"):
        layer_geometry(nn.Sequential(nn.Conv2d(3, 3, 3)), "conv9")
