"""Feature visualisation (model/units/visualize.py) on hand-made networks whose units answer to colours."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from model.network.caffenet import IMAGE_MEAN, IMAGE_STD
from model.settings import VISUALIZE
from model.units.visualize import normalized, unit_maxima, visualize_clusters, visualize_units

FAST = replace(VISUALIZE, size=32, steps=96, pad=4, jitter=2)


def colour_network() -> nn.Sequential:
    """A 1x1 convolution whose unit 0 is the red of a pixel minus its green and blue, unit 1 the green minus
    red and blue, unit 2 the blue minus the others (on the normalised input), then, as the network's output,
    each unit's mean: three "clusters"
    (no ReLU: a grey start would leave both silent and the clusters without a gradient)."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]).view(3, 3, 1, 1))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def colour_share(images: torch.Tensor, channel: int) -> float:
    """The fraction of pixels whose largest channel is ``channel``, inside the border the padding covers (the
    transforms rarely show the network an image's corners, so nothing there is optimised)."""
    inside = images[..., FAST.pad:-FAST.pad, FAST.pad:-FAST.pad].float()
    return float((inside.argmax(dim=1) == channel).float().mean())


def test_a_units_visualisation_is_mostly_the_colour_it_answers_to():
    network = colour_network()
    images = visualize_units(network, "0", [0, 1], IMAGE_MEAN, IMAGE_STD, FAST)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert colour_share(images[:1], 0) > 0.85      # unit 0: red
    assert colour_share(images[1:], 1) > 0.85      # unit 1, optimised in the same batch: green
    scores = unit_maxima(network, "0", images, IMAGE_MEAN, IMAGE_STD)
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_a_clusters_visualisation_raises_its_probability():
    network = colour_network()
    images = visualize_clusters(network, [1, 0], 3, 32, False, IMAGE_MEAN, IMAGE_STD, FAST)
    probabilities = network(normalized(images.float() / 255, IMAGE_MEAN, IMAGE_STD)).softmax(dim=1)
    assert probabilities.argmax(dim=1).tolist() == [1, 0]
    assert probabilities[0, 1] > 0.5 and probabilities[1, 0] > 0.5       # grey gives each cluster 1/3


def test_the_same_seed_gives_the_same_image_and_another_seed_another():
    network = colour_network()
    first, again = (visualize_units(network, "0", [0], IMAGE_MEAN, IMAGE_STD, replace(FAST, steps=4)) for _ in "ab")
    other = visualize_units(network, "0", [0], IMAGE_MEAN, IMAGE_STD, replace(FAST, steps=4, seed=1))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_units_clusters_and_layers_out_of_range_are_named():
    network = colour_network()
    with pytest.raises(ValueError, match=r"unit 5 out of range: layer 0 has 3 units \(0-2\)"):
        visualize_units(network, "0", [0, 5], IMAGE_MEAN, IMAGE_STD, FAST)
    with pytest.raises(ValueError, match=r"sound cluster 3 out of range: the network has 3 sound clusters \(0-2\)"):
        visualize_clusters(network, [3], 3, 32, False, IMAGE_MEAN, IMAGE_STD, FAST)
    with pytest.raises(ValueError, match="no layer 'conv5'; it has 0, 1, 2"):
        visualize_units(network, "conv5", [0], IMAGE_MEAN, IMAGE_STD, FAST)
