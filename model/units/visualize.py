"""Feature visualisation: for each unit an image optimised to excite it, for each sound cluster one optimised
for the cluster's probability (what the network thinks that sound looks like). After Olah et al. 2017,
"Feature Visualization", in the four parts of Lucid/Lucent's ``optvis``:

- parameterisation (``FourierImage``): the image as a spectrum scaled by 1/f^p, its colours decorrelated, so
  that a gradient step changes low frequencies and natural colour directions first;
- transforms (``random_transforms``): each step the image is padded, then jittered, scaled and rotated at
  random, so that only patterns that excite the unit wherever they fall survive;
- objectives (``unit_objective``, ``cluster_objective``): a unit's mean pre-ReLU activation over its map, a
  cluster's log-probability; one value per image, so many units are optimised in one batch;
- the loop (``render``): Adam on the spectrum, images out as uint8.

``visualize_units`` and ``visualize_clusters`` are the entry points; ``unit_maxima`` scores pictures as
``ambient units`` does (a unit's spatial maximum), for the check that a visualisation excites its unit more
than its top pool image does; ``visualize_run`` does both for a trained run and writes RUN_DIR/visualizations/.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.io import encode_png

from model.data.dataset import atomic_file, write_json_atomic
from model.network.run import (RunFolder, cluster_visualization_file, read_visualizations, unit_visualization_file,
                               visualizations_dir)
from model.settings import DETECTOR_PRECISION, VISUALIZE, VisualizeSettings
from model.units.nethook import check_layer, run_until, run_until_preactivation

# Lucid's square root of the colour covariance of ImageNet pixels (rows: R, G, B): a parameter step along
# one of its columns moves the colours natural images vary along.
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])
COLOR_DECORRELATION = COLOR_CORRELATION_SQRT / COLOR_CORRELATION_SQRT.norm(dim=0).max()


class FourierImage(nn.Module):
    """``count`` RGB images of side ``size`` in [0, 1], parameterised by their decorrelated-colour spectra."""

    def __init__(self, count: int, size: int, decay_power: float, generator: torch.Generator,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.size = size
        frequencies = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2)
        scale = 1.0 / np.maximum(frequencies, 1.0 / size) ** decay_power
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32, device=device)[None, None, ..., None])
        spectrum = torch.randn(count, 3, *frequencies.shape, 2, generator=generator) * 0.01
        self.spectrum = nn.Parameter(spectrum.to(device))

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex((self.scale * self.spectrum).contiguous())
        decorrelated = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4.0   # Lucid's scale
        colours = torch.einsum("nchw,dc->ndhw", decorrelated, COLOR_DECORRELATION.to(decorrelated.device))
        return torch.sigmoid(colours)


def random_transforms(images: torch.Tensor, settings: VisualizeSettings, generator: torch.Generator) -> torch.Tensor:
    """Each image padded with grey, then shifted by up to ``jitter`` pixels, scaled within ``scales`` and rotated
    by up to ``max_degrees``, each at random; the same side out as in."""
    count, _, size, _ = images.shape
    padded = F.pad(images, [settings.pad] * 4, value=0.5)
    side = size + 2 * settings.pad
    angles = (torch.rand(count, generator=generator) * 2 - 1) * settings.max_degrees * np.pi / 180
    low, high = settings.scales
    scales = low + torch.rand(count, generator=generator) * (high - low)
    shifts = torch.randint(-settings.jitter, settings.jitter + 1, (count, 2), generator=generator) * 2.0 / side
    # affine_grid maps output to input coordinates: 1/scale zooms in by scale; size/side crops the padding away.
    linear = (size / side) / scales
    theta = torch.stack([torch.stack([angles.cos() * linear, -angles.sin() * linear, shifts[:, 0]], 1),
                         torch.stack([angles.sin() * linear, angles.cos() * linear, shifts[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.device), [count, 3, size, size], align_corners=False)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def normalized(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """[0, 1] float images -> the network's normalised input."""
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def unit_objective(module: nn.Module, layer: str, units: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Image i -> unit ``units[i]``'s mean pre-ReLU activation over ``layer``'s map."""
    def objective(x: torch.Tensor) -> torch.Tensor:
        maps = run_until_preactivation(module, layer, x)
        chosen = maps[torch.arange(len(x), device=x.device), torch.as_tensor(units, device=x.device)]
        return chosen.flatten(1).mean(dim=1)
    return objective


def cluster_objective(module: nn.Module, clusters: Sequence[int], multilabel: bool
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Image i -> the log-probability of sound label ``clusters[i]`` (softmax over clusters, or its own sigmoid)."""
    def objective(x: torch.Tensor) -> torch.Tensor:
        logits = module(x)
        log_probabilities = F.logsigmoid(logits) if multilabel else F.log_softmax(logits, dim=1)
        return log_probabilities[torch.arange(len(x), device=x.device), torch.as_tensor(clusters, device=x.device)]
    return objective


def render(objective: Callable[[torch.Tensor], torch.Tensor], count: int, size: int, mean: Sequence[float],
           std: Sequence[float], settings: VisualizeSettings, seed: int,
           device: torch.device | str = "cpu") -> torch.Tensor:
    """``count`` images, each optimised for its own entry of ``objective``'s output: uint8 (count, 3, size, size)."""
    generator = torch.Generator().manual_seed(seed)
    image = FourierImage(count, size, settings.decay_power, generator, device)
    optimiser = torch.optim.Adam(image.parameters(), lr=settings.lr)
    for _ in range(settings.steps):
        optimiser.zero_grad()
        # Summed: the images do not interact (the network is in eval mode), so each gets its own gradient.
        loss = -objective(normalized(random_transforms(image(), settings, generator), mean, std)).sum()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return (image() * 255).round().to(torch.uint8).cpu()


def layer_units(module: nn.Module, layer: str, size: int, device: torch.device | str = "cpu") -> int:
    """How many units (channels) ``layer`` has, measured on a blank image of side ``size``."""
    check_layer(module, layer)
    with torch.no_grad():
        return run_until(module, layer, torch.zeros(1, 3, size, size, device=device)).shape[1]


def check_indices(indices: Sequence[int], count: int, noun: str, owner: str) -> None:
    """ValueError naming what exists when an index is outside 0..count-1 ("unit 300 out of range: layer conv5
    has 256 units (0-255)")."""
    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise ValueError(f"{noun} {', '.join(map(str, bad))} out of range: {owner} has {count} {noun}s "
                         f"(0-{count - 1})")


def visualize_units(module: nn.Module, layer: str, units: Sequence[int], mean: Sequence[float], std: Sequence[float],
                    settings: VisualizeSettings = VISUALIZE, device: torch.device | str = "cpu",
                    progress: Callable[[int], None] = lambda n: None) -> torch.Tensor:
    """uint8 (len(units), 3, size, size): each unit's image, ``settings.batch`` units optimised at a time.
    ValueError names the layers or the range of units when ``layer`` or a unit does not exist."""
    check_indices(units, layer_units(module, layer, settings.size, device), "unit", f"layer {layer}")
    images = []
    for first in range(0, len(units), settings.batch):
        chunk = list(units[first:first + settings.batch])
        # One seed per batch, fixed by --seed and the batch's place: a rerun gives the same images.
        images.append(render(unit_objective(module, layer, chunk), len(chunk), settings.size, mean, std, settings,
                             settings.seed + first, device))
        progress(len(chunk))
    return torch.cat(images) if images else torch.empty(0, 3, settings.size, settings.size, dtype=torch.uint8)


def visualize_clusters(module: nn.Module, clusters: Sequence[int], num_outputs: int, input_size: int, multilabel: bool,
                       mean: Sequence[float], std: Sequence[float], settings: VisualizeSettings = VISUALIZE,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (len(clusters), 3, input_size, input_size): each sound label's image (the whole network runs, so
    the image has the network's input side)."""
    check_indices(clusters, num_outputs, "sound cluster", "the network")
    images = []
    for first in range(0, len(clusters), settings.batch):
        chunk = list(clusters[first:first + settings.batch])
        images.append(render(cluster_objective(module, chunk, multilabel), len(chunk), input_size, mean, std,
                             settings, settings.seed + first, device))
    return torch.cat(images) if images else torch.empty(0, 3, input_size, input_size, dtype=torch.uint8)


@torch.no_grad()
def unit_maxima(module: nn.Module, layer: str, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                device: torch.device | str = "cpu") -> torch.Tensor:
    """float (images, units): each uint8 image's spatial maximum of every unit of ``layer`` (after its ReLU, as
    ``ambient units`` scores the pool)."""
    maps = run_until(module, layer, normalized(images.to(device).float() / 255, mean, std))
    return maps.amax(dim=(2, 3)).cpu()


def detector_units(labels: Sequence[dict] | None, layer: str) -> list[int]:
    """The units of ``layer`` that dissection calls detectors (precision >= DETECTOR_PRECISION); ValueError
    when the run has no dissection or the layer no detector."""
    if labels is None:
        raise ValueError("the run has no dissection.json: run `ambient dissect` first, or name --units")
    units = sorted(u["unit"] for u in labels if u.get("layer", layer) == layer and u["category"]
                   and u["precision"] >= DETECTOR_PRECISION)
    if not units:
        raise ValueError(f"{layer} has no detectors (precision >= {DETECTOR_PRECISION:.0%}); name --units instead")
    return units


def visualize_run(run_dir: str | Path, layer: str, units: Sequence[int], clusters: Sequence[int],
                  settings: VisualizeSettings = VISUALIZE, device: torch.device | str = "cpu",
                  progress: Callable[[int], None] = lambda n: None) -> dict:
    """Each of ``units`` of ``layer`` and each sound cluster of ``clusters`` visualised for a trained run: PNGs in
    RUN_DIR/visualizations/ and their scores added to its index.json (returned). A unit's ``ratio`` is its image's
    spatial maximum over that of its top pool image (RUN_DIR/units_<layer>.npz; None before `ambient units`)."""
    run = RunFolder(run_dir)
    module, info = run.network(device)
    module.requires_grad_(False)         # gradients go to the image only
    index = read_visualizations(run.path)
    folder = visualizations_dir(run.path)
    folder.mkdir(exist_ok=True)
    if units:
        images = visualize_units(module, layer, units, info.mean, info.std, settings, device, progress)
        scores = unit_maxima(module, layer, images, info.mean, info.std, device)
        top = _top_scores(run, layer)
        done = []
        for row, (unit, image) in enumerate(zip(units, images)):
            path = unit_visualization_file(run.path, layer, unit)
            _write_png(path, image)
            activation = float(scores[row, unit])
            top_activation = None if top is None else float(top[unit])
            done.append({"layer": layer, "unit": int(unit), "file": path.name, "activation": activation,
                         "top_activation": top_activation, "seed": settings.seed,
                         "ratio": activation / top_activation if top_activation else None})
        replaced = {(entry["layer"], entry["unit"]) for entry in done}
        index["units"] = [e for e in index["units"] if (e["layer"], e["unit"]) not in replaced] + done
    if clusters:
        images = visualize_clusters(module, clusters, info.num_outputs, info.crop_size, info.multilabel,
                                    info.mean, info.std, settings, device)
        with torch.no_grad():
            logits = module(normalized(images.to(device).float() / 255, info.mean, info.std))
            probabilities = (logits.sigmoid() if info.multilabel else logits.softmax(dim=1)).cpu()
        done = []
        for row, (cluster, image) in enumerate(zip(clusters, images)):
            path = cluster_visualization_file(run.path, cluster)
            _write_png(path, image)
            done.append({"cluster": int(cluster), "file": path.name, "seed": settings.seed,
                         "probability": float(probabilities[row, cluster])})
        replaced_clusters = {entry["cluster"] for entry in done}
        index["clusters"] = [e for e in index["clusters"] if e["cluster"] not in replaced_clusters] + done
    index["settings"] = asdict(settings)
    write_json_atomic(folder / "index.json", index)
    return index


def _top_scores(run: RunFolder, layer: str) -> np.ndarray | None:
    """Each unit's best pool activation (its first top image's), None when the layer has no units file."""
    path = run.units_file(layer)
    if not path.exists():
        return None
    with np.load(path) as data:
        return data["scores"][:, 0].astype(np.float64)


def _write_png(path: Path, image: torch.Tensor) -> None:
    with atomic_file(path) as file:
        file.write(encode_png(image).numpy().tobytes())
