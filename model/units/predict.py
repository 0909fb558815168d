"""Hear an image: what a network predicts for any picture, which units fire, where the evidence is
(Grad-CAM), and the sound texture it predicts.

Entry points: ``load_predictor`` (RUN_DIR -> a ``Predictor``: our trained run, or a network that
``ambient units`` analysed there: torchvision, TorchScript, torch.export) and ``predict`` (frames in,
``Prediction``s out: pure, no files). ``decode_image`` turns untrusted bytes into an RGB image within
bounds (model/data/decode.py, which also decodes in worker processes killed at a deadline), ``image_frame``
into the network's frame as ingest makes it, ``heatmap_overlay`` the heatmap into a picture.

What applies to which network:

- our cluster run: the sound clusters' probabilities (softmax), Grad-CAM on the top cluster, and the
  texture of the top cluster's centroid. Not the probability-weighted mix of centroids: a texture is the
  statistics of one sound, and a mix of several clusters' statistics is the texture of no sound the network
  learnt to tell (an average of a rain and a speech texture is neither), while the top centroid is the
  category the network predicts, as in the paper.
- our binary run: each code bit's probability (sigmoid), Grad-CAM on the surest bit that is on, and the texture
  the code predicts: the training mean plus each PCA direction at its mean absolute projection, signed and
  weighted by the bit's probability (2p - 1).
- a spectrum run: its bits; no texture (its code is of the spectrum, not the texture).
- a torchvision network: no sound labels; Grad-CAM on its top class, named when torchvision knows the
  class names.
- a TorchScript or torch.export trunk whose output is the layer: no labels; the heatmap is where the layer
  fires (the mean of its rectified maps).
"""
from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from model.data import dataset as ds
from model.network import run as rd
# Untrusted image bytes are decoded in model/data/decode.py (light: its worker processes import no torch).
from model.data.decode import IMAGE_FORMATS, BadImage, decode_image, frame_array  # noqa: F401: callers use them from here
from model.units.nethook import retain_layer, run_until
from model.network.caffenet import CaffeNetBN, normalize_images
from model.settings import UNITS

# Colours of the heatmap, low to high (close to matplotlib's "jet"): hand-written, a 5-stop ramp needs no library.
_HEAT_COLOURS = np.array([[0, 0, 143], [0, 128, 255], [128, 255, 128], [255, 128, 0], [128, 0, 0]], dtype=float)


@dataclass
class Predictor:
    """A network ready to explain images: how to feed it, its layer, and what its outputs mean."""

    module: nn.Module
    layer: str | None              # the layer whose units are reported; None: the module's output is the layer
    kind: str                      # "caffenet-bn", "torchvision:alexnet", "torchscript", "export"
    output_kind: str | None        # "cluster", "binary", "spectrum", "classes" (torchvision), None (a trunk)
    frame_size: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_names: list[str] = field(default_factory=list)
    unit_labels: dict[int, str] = field(default_factory=dict)    # automatic labels (dissection.json)
    thresholds: np.ndarray | None = None     # each unit's top-quantile activation over the pool (units file)
    centroid_textures: np.ndarray | None = None    # cluster: (k, 502), unweighted texture space
    code_texture: tuple[np.ndarray, np.ndarray] | None = None    # binary: (mean (502,), directions (bits, 502))
    texture_note: str = ""         # why there is no texture, when there is none

    @property
    def layer_name(self) -> str:
        return self.layer or "output"

    @property
    def sound_labels(self) -> bool:
        return self.output_kind in ("cluster", "binary", "spectrum")


@dataclass
class Prediction:
    """What the network makes of one image."""

    labels: list[dict]          # [{"label", "probability"}], best first; empty where the network has none
    units: list[dict]           # [{"layer", "unit", "activation", "relative", "label"}], firing most first
    target: str | None          # what the heatmap explains ("Cluster 3", "class 281 (tabby)"), None: where the layer fires
    heatmap: np.ndarray         # (input_size, input_size) in [0, 1], over ``crop``
    crop: np.ndarray            # (input_size, input_size, 3) uint8: the picture the network saw
    texture: np.ndarray | None  # (502,) predicted sound texture
    texture_source: str         # how the texture was made, or why there is none


# --- Loading

def load_predictor(run_dir: str | Path, device: str | torch.device = "cpu",
                   digests: Mapping[str, str] | None = None) -> Predictor:
    """The network of RUN_DIR with what it predicts: our trained run (its model.pt or checkpoint), else the
    network `ambient units` analysed there (conv5 first, else the first layer analysed). ``digests``
    ({resolved path: SHA-256}, recorded when the run was published): each model file read must have its
    recorded digest (``model.network.modelfiles.model_bytes``).

    Raises FileNotFoundError (naming what to run) or ValueError for a folder that holds neither, or a model
    file that could run code or has changed (``ModelFileRefused``)."""
    run = rd.RunFolder(run_dir)
    if run.model_file is not None:
        model, info = run.network(device, digests=digests)
        predictor = Predictor(model, UNITS.layer, "caffenet-bn", info.label_kind, info.frame_size, info.crop_size,
                              info.mean, info.std, _sound_names(info.label_kind, info.num_outputs))
        _add_textures(predictor, run)
    else:
        predictor = _analysed_network(run, _analysed_meta(run), device, digests)
        predictor.texture_note = "no sound texture: this network was not trained on sound"
    predictor.unit_labels = _automatic_labels(run, predictor.layer_name)
    path = run.units_file(predictor.layer_name)
    if path.exists():
        with np.load(path) as data:
            predictor.thresholds = data["thresholds"] if "thresholds" in data else None
    return predictor


def _sound_names(kind: str, count: int) -> list[str]:
    # The names model/sound/groups.py gives the groups (and `ambient publish` stores): pages and CLI agree.
    return [f"Cluster {i + 1}" if kind == "cluster" else f"Bit {i + 1}" for i in range(count)]


def network_files(run_dir: str | Path | rd.RunFolder) -> list[Path]:
    """The model files ``load_predictor`` reads for RUN_DIR: our run's weights, else the analysed network's
    file (TorchScript or torch.export) and weights; what ``ambient publish`` records the SHA-256 of."""
    run = rd.RunFolder.of(run_dir)
    if run.model_file is not None:
        return [run.model_file]
    meta = _analysed_meta(run)
    spec, weights = meta.get("model_spec") or "", meta.get("weights")
    files = [Path(spec.split(":", 1)[1])] if spec.startswith(("torchscript:", "export:")) else []
    return files + ([Path(weights)] if weights else [])


def _analysed_meta(run: rd.RunFolder) -> dict:
    """The units file's meta of the layer ``load_predictor`` shows for a network `ambient units` analysed."""
    layers = run.layers
    if not layers:
        raise FileNotFoundError(f"{run.path}: no {rd.FINAL_MODEL} (a trained run) and no units_<layer>.npz "
                                f"(a network published by `ambient units --model ...`)")
    return run.units_meta(UNITS.layer if UNITS.layer in layers else layers[0])


def _analysed_network(run: rd.RunFolder, meta: dict, device, digests: Mapping[str, str] | None = None) -> Predictor:
    from model.units.top_images import load_network     # measures the layer's geometry: only for networks not our own

    spec, weights = meta.get("model_spec"), meta.get("weights")
    network = load_network(run, meta["layer"], spec, Path(weights) if weights else None, device,
                           digests=digests)
    if network.kind.startswith("torchvision:"):
        name = network.kind.split(":", 1)[1]
        return Predictor(network.module, network.layer, network.kind, "classes", network.frame_size,
                         network.input_size, network.mean, network.std, _class_names(name))
    return Predictor(network.module, None, network.kind, None, network.frame_size, network.input_size,
                     network.mean, network.std)


def _class_names(model_name: str) -> list[str]:
    """The class names torchvision ships with a model's weight enum (no download), else none."""
    try:
        return list(torchvision.models.get_model_weights(model_name).DEFAULT.meta.get("categories") or [])
    except (ValueError, KeyError, AttributeError):
        return []


def _automatic_labels(run: rd.RunFolder, layer: str) -> dict[int, str]:
    return {int(row["unit"]): row["category"] for row in run.dissection or []
            if row.get("category") and row.get("layer", layer) == layer}


def _add_textures(predictor: Predictor, run: rd.RunFolder) -> None:
    """The textures the run's labels stand for, from the DATA_DIR it was trained on (run.json)."""
    kind = predictor.output_kind
    if kind not in ("cluster", "binary"):
        predictor.texture_note = f"no sound texture: {kind} labels code the spectrum, not the texture"
        return
    data_dir, path = run.data_dir, run.labels_file(kind)
    if path is None or not path.exists():
        predictor.texture_note = (f"no sound texture: the run's {kind} labels ({path or 'run.json names no data_dir'}) "
                                  f"are not here")
        return
    with np.load(path) as labels:
        weights = labels["weights"].astype(np.float64)
        if kind == "cluster":
            predictor.centroid_textures = labels["centroids"].astype(np.float64) / weights
            return
        components, mean = labels["components"].astype(np.float64), labels["mean"].astype(np.float64)
    textures, _spectrum = ds.load_features(data_dir)
    spread = np.abs((textures.astype(np.float64) * weights - mean) @ components.T).mean(axis=0)     # (bits,)
    predictor.code_texture = (mean / weights, spread[:, None] * components / weights)


# --- Images

def image_frame(image: Image.Image | np.ndarray, frame_size: int) -> torch.Tensor:
    """uint8 (3, frame_size, frame_size): the short side scaled to the frame size and centre-cropped, as
    ingest does to video frames and `ambient units` to still images (model/data/pool.py)."""
    return frame_tensor(frame_array(image, frame_size))


def frame_tensor(frame: np.ndarray) -> torch.Tensor:
    """A uint8 (H, W, 3) frame (``frame_array``, or what ``DecodeWorkers.frame`` answers) as ``predict`` takes it."""
    return torch.from_numpy(np.array(frame)).permute(2, 0, 1).contiguous()


def heatmap_overlay(crop: np.ndarray, heat: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: ``crop`` with ``heat`` (H, W, in [0, 1]) coloured over it, stronger where it is hotter."""
    levels = np.clip(heat, 0, 1) * (len(_HEAT_COLOURS) - 1)
    low = np.floor(levels).astype(int).clip(0, len(_HEAT_COLOURS) - 2)
    mix = (levels - low)[..., None]
    colour = _HEAT_COLOURS[low] * (1 - mix) + _HEAT_COLOURS[low + 1] * mix
    alpha = opacity * (0.3 + 0.7 * np.clip(heat, 0, 1))[..., None]
    return (crop * (1 - alpha) + colour * alpha).round().clip(0, 255).astype(np.uint8)


# --- Prediction

def predict(predictor: Predictor, frames: torch.Tensor, top_labels: int = 5, top_units: int = 5) -> list[Prediction]:
    """uint8 (N, 3, frame_size, frame_size) frames -> one Prediction each (see the module docstring)."""
    device = next(iter(predictor.module.parameters()), torch.empty(0)).device
    top = (frames.shape[-2] - predictor.input_size) // 2
    crops = frames[..., top:top + predictor.input_size, top:top + predictor.input_size].to(device)
    x = normalize_images(crops, predictor.mean, predictor.std)
    if predictor.output_kind is None:       # a trunk: its output is the layer
        with torch.no_grad():
            maps = predictor.module(x).float()
        logits, heat = None, activation_map(maps)
    else:
        # The top cluster or class; for code bits the surest bit on (the largest logit).
        heat, maps, logits = grad_cam(predictor.module, predictor.layer, x, None)
        targets = logits.argmax(dim=1)
    if maps.ndim != 4:
        raise ValueError(f"layer {predictor.layer_name} gives {tuple(maps.shape)} outputs, not spatial maps")
    heat = upsample_heat(heat, crops.shape[-1])
    heat = heat / heat.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    maxima = maps.amax(dim=(2, 3)).cpu().numpy()
    probabilities = None if logits is None else (
        torch.softmax(logits, 1) if predictor.output_kind in ("cluster", "classes") else torch.sigmoid(logits)
    ).cpu().numpy()
    results = []
    for i in range(len(frames)):
        labels, target, texture, source = [], None, None, predictor.texture_note
        if probabilities is not None:
            order = np.argsort(-probabilities[i], kind="stable")
            labels = [{"label": _name(predictor, int(c)), "probability": float(probabilities[i, c])}
                      for c in order[:top_labels]]
            target = _name(predictor, int(targets[i]))
            texture, source = _texture(predictor, probabilities[i])
        results.append(Prediction(labels, _firing_units(predictor, maxima[i], top_units), target,
                                  heat[i].cpu().numpy(), crops[i].permute(1, 2, 0).cpu().numpy(), texture,
                                  source or predictor.texture_note))
    return results


# --- Heatmaps: where the evidence for an output is. Each takes normalised crops x (N, 3, S, S) and
# ``target`` (N, outputs) weights of the logits to explain (one-hot for a label, a code's bits), and gives
# (N, h, w) raw maps at the layer's resolution (``upsample_heat`` brings them to the crop).

HEATMAP_METHODS = ("gradcam", "cam", "activation")


def one_hot(labels: torch.Tensor, outputs: int) -> torch.Tensor:
    """(N,) label indices -> (N, outputs) float weights, as the heatmaps take them."""
    return torch.nn.functional.one_hot(labels.long(), outputs).float()


def grad_cam(module: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(heat, the layer's maps, logits): Grad-CAM (Selvaraju et al. 2017), the maps weighted by their mean
    gradient of the target's score, summed and rectified. ``target`` None: the largest logit of each image."""
    with torch.enable_grad(), retain_layer(module, layer) as kept:
        logits = module(x)
        maps = kept.output
        if target is None:
            target = one_hot(logits.detach().argmax(dim=1), logits.shape[1])
        score = (logits * target.to(logits.dtype)).sum()
        (gradients,) = torch.autograd.grad(score, maps)
    heat = torch.relu((gradients.mean(dim=(2, 3), keepdim=True) * maps).sum(dim=1)).detach()
    return heat, maps.detach().float(), logits.detach().float()


def class_weights(module: CaffeNetBN) -> torch.Tensor:
    """(outputs, conv5 units): CaffeNet's head (pool5 -> fc6 -> fc7 -> output) as one linear map, its ReLUs and
    dropout left out, batch norm's scale folded in (eval), summed over pool5's cells: how much a conv5 unit's
    activation adds to each output wherever it fires. CAM's class weights (Zhou et al. 2016) for a head that is
    not one linear layer."""
    def folded(block: nn.Sequential) -> torch.Tensor:     # Linear (no bias) -> BatchNorm1d
        linear, norm = block[0], block[1]
        return (norm.weight / torch.sqrt(norm.running_var + norm.eps))[:, None] * linear.weight

    with torch.no_grad():
        weights = module.output.weight @ folded(module.fc7) @ folded(module.fc6)
        return weights.reshape(weights.shape[0], module.conv5[0].out_channels, -1).sum(dim=-1)


def class_activation_map(module: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CAM-like: the raw conv5 maps weighted by the target's class weights (``class_weights``), rectified.
    Our CaffeNet's conv5 only: ValueError for another network or layer."""
    if not isinstance(module, CaffeNetBN) or layer != "conv5":
        raise ValueError(f"the CAM heatmap needs our CaffeNet's conv5 (its head's class weights), "
                         f"not {type(module).__name__}'s {layer}")
    with torch.no_grad():
        maps = module.forward_features(x, layer).float()
        weights = target.float() @ class_weights(module).float()                   # (N, units)
        return torch.relu((weights[:, :, None, None] * maps).sum(dim=1))


def activation_map(maps: torch.Tensor) -> torch.Tensor:
    """Where the layer fires whatever the label: the mean of its rectified maps (N, units, h, w) -> (N, h, w)."""
    return torch.relu(maps.float()).mean(dim=1)


def heatmap(module: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor, method: str) -> torch.Tensor:
    """(N, h, w) raw heat of ``method`` (one of ``HEATMAP_METHODS``) for ``target``."""
    if method == "gradcam":
        return grad_cam(module, layer, x, target)[0]
    if method == "cam":
        return class_activation_map(module, layer, x, target)
    if method == "activation":
        with torch.no_grad():
            return activation_map(run_until(module, layer, x))
    raise ValueError(f"unknown heatmap method {method!r}; choose one of {', '.join(HEATMAP_METHODS)}")


def upsample_heat(heat: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w) -> (N, size, size): bilinear over the crop, values kept (not normalised)."""
    return torch.nn.functional.interpolate(heat[:, None].float(), size=(size, size), mode="bilinear",
                                           align_corners=False)[:, 0]


def _name(predictor: Predictor, index: int) -> str:
    if index < len(predictor.output_names):
        name = predictor.output_names[index]
        return name if predictor.sound_labels else f"class {index} ({name})"
    return f"class {index}"


def _firing_units(predictor: Predictor, maxima: np.ndarray, count: int) -> list[dict]:
    """The units whose spatial maxima are largest; relative to each unit's top-quantile activation over the
    pool when the units file gives it (a unit's scale is its own: 3.0 is a lot for one unit, little for another)."""
    relative = None
    if predictor.thresholds is not None and len(predictor.thresholds) == len(maxima):
        relative = maxima / np.maximum(predictor.thresholds, 1e-6)
    order = np.argsort(-(relative if relative is not None else maxima), kind="stable")[:count]
    return [{"layer": predictor.layer_name, "unit": int(u), "activation": float(maxima[u]),
             "relative": None if relative is None else float(relative[u]),
             "label": predictor.unit_labels.get(int(u))} for u in order]


def _texture(predictor: Predictor, probabilities: np.ndarray) -> tuple[np.ndarray | None, str]:
    if predictor.centroid_textures is not None:
        top = int(np.argmax(probabilities))
        return (predictor.centroid_textures[top].astype(np.float32),
                f"the centroid texture of {predictor.output_names[top]}, the top cluster")
    if predictor.code_texture is not None:
        mean, directions = predictor.code_texture
        return ((mean + (2 * probabilities - 1) @ directions).astype(np.float32),
                "the texture the code bits predict: the training mean plus each bit's PCA direction, "
                "signed and weighted by the bit's probability")
    return None, predictor.texture_note


def prediction_record(prediction: Prediction) -> dict:
    """The JSON fields both the CLI (--json) and the API give: labels, units, target, texture_source."""
    return {"labels": prediction.labels, "units": prediction.units, "target": prediction.target,
            "texture_source": prediction.texture_source}


def png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()
