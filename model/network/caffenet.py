"""CaffeNet with batch normalisation (the paper's network), with named layers.

Layers run in the order of ``LAYERS``; each conv/fc block is conv/linear -> batch norm -> ReLU,
so ``forward_features(x, "conv5")`` returns rectified conv5 maps (what unit visualisation reads).
"""
from __future__ import annotations

import torch
from torch import nn

LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "output")

# ImageNet statistics: the frames are natural images and the values only need to centre the input.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
             groups: int = 1) -> nn.Sequential:
    # The conv bias is redundant before batch norm.
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def _fc_bn(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, out_features, bias=False), nn.BatchNorm1d(out_features),
                         nn.ReLU(inplace=True), nn.Dropout(dropout))


def pool5_size(input_size: int) -> int:
    """Side of the pool5 map for a square input (6 for the paper's 227x227 crops)."""
    side = (input_size - 11) // 4 + 1          # conv1, stride 4
    for _ in range(3):                          # pool1, pool2, pool5: 3x3 stride 2; convs keep size
        side = (side - 3) // 2 + 1
    if side < 1:
        raise ValueError(f"input size {input_size} is too small for CaffeNet (needs at least 67)")
    return side


class CaffeNetBN(nn.Module):
    """CaffeNet (Krizhevsky et al. with grouped conv2/4/5) with batch norm after every conv and fc layer.

    ``num_outputs`` logits come out of ``output``: softmax over k clusters or k independent sigmoids
    (the loss is the trainer's choice). ``input_size`` is the crop side (227 in the paper); ``fc_width``
    is 4096 in the paper and smaller only to make tiny test models cheap.
    """

    def __init__(self, num_outputs: int, input_size: int = 227, fc_width: int = 4096, dropout: float = 0.5):
        super().__init__()
        self.input_size = input_size
        self.conv1 = _conv_bn(3, 96, 11, stride=4)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.conv2 = _conv_bn(96, 256, 5, padding=2, groups=2)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3 = _conv_bn(256, 384, 3, padding=1)
        self.conv4 = _conv_bn(384, 384, 3, padding=1, groups=2)
        self.conv5 = _conv_bn(384, 256, 3, padding=1, groups=2)
        self.pool5 = nn.MaxPool2d(3, 2)
        self.fc6 = _fc_bn(256 * pool5_size(input_size) ** 2, fc_width, dropout)
        self.fc7 = _fc_bn(fc_width, fc_width, dropout)
        self.output = nn.Linear(fc_width, num_outputs)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor, layer: str = "output") -> torch.Tensor:
        """Run the network up to and including ``layer`` (one of ``LAYERS``) and return its output."""
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
        for name in LAYERS:
            if name == "fc6":
                x = torch.flatten(x, 1)
            x = getattr(self, name)(x)
            if name == layer:
                return x
        raise AssertionError("unreachable: layer is in LAYERS")

    def forward_from(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """Run the layers after ``layer`` on its output ``x`` (what ``forward_features(., layer)`` returned):
        an edited layer's effect on the output without running the layers before it again."""
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; choose one of {', '.join(LAYERS)}")
        for name in LAYERS[LAYERS.index(layer) + 1:]:
            if name == "fc6":
                x = torch.flatten(x, 1)
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x, "output")


def normalize_images(images: torch.Tensor, mean=IMAGE_MEAN, std=IMAGE_STD) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 normalised, on the images' device."""
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t
