"""Automatic unit labels from the demo world's ground truth (``ambient dissect RUN_DIR --truth``).

An image counts as containing a category when the unit's masked region (the paper's receptive-field
circles) and the category's pixels overlap by at least ``overlap_fraction`` of the smaller of the two:
the object fills most of the region (a large object or stuff seen through the region) or the region
holds most of the object (a small object inside it). Either way a person looking at the masked image
would see the object, which is what the paper's annotators were asked. A unit's precision for a
category is the fraction of its top images containing it (the paper's 60% rule for detectors);
its IoU is Network Dissection's: the unit's thresholded, upsampled activation against the category's
masks, intersections and unions summed over the top images.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from model import dataset as ds
from model.activations import LayerGeometry, receptive_field_masks
from model.categories import category_by_name
from model.media import resize_center_crop
from model.run import dissection_file, units_file
from model.settings import UNITS, UnitSettings

@dataclass(frozen=True)
class UnitLabel:
    unit: int
    category: str | None       # None: no category in any of the unit's top images
    precision: float
    iou: float
    sounding: bool             # the category has a characteristic sound


def contains(region: np.ndarray, mask: np.ndarray, overlap_fraction: float) -> bool:
    """Whether the unit's region shows the object (see the module docstring)."""
    smaller = min(region.sum(), mask.sum())
    return bool(smaller > 0 and (region & mask).sum() >= overlap_fraction * smaller)


def label_unit(regions: np.ndarray, active: np.ndarray, truths: Sequence[dict[str, np.ndarray]],
               overlap_fraction: float) -> tuple[str | None, float, float]:
    """(best category, its precision, its IoU) for one unit's top images.

    ``regions`` and ``active`` (N, S, S) bool: the masked regions and the thresholded activations;
    ``truths[i]`` maps each category in image i to its (S, S) bool mask. Precision ranks the
    categories; IoU breaks ties.
    """
    if not len(regions):
        return None, 0.0, 0.0
    categories = sorted({c for truth in truths for c in truth})
    region_sizes = regions.sum(axis=(1, 2))
    active_sizes = active.sum(axis=(1, 2))
    best: tuple[float, float, str | None] = (0.0, 0.0, None)
    for category in categories:
        empty = np.zeros(regions.shape[1:], bool)
        masks = np.stack([truth.get(category, empty) for truth in truths])          # (N, S, S)
        mask_sizes = masks.sum(axis=(1, 2))
        smaller = np.minimum(region_sizes, mask_sizes)
        hits = (smaller > 0) & ((regions & masks).sum(axis=(1, 2)) >= overlap_fraction * smaller)
        inter = (active & masks).sum()
        union = active_sizes.sum() + mask_sizes.sum() - inter
        candidate = (float(hits.mean()), float(inter / union) if union else 0.0, category)
        if candidate[:2] > best[:2]:
            best = candidate
    return best[2], best[0], best[1]


def upsampled_activation(maps: torch.Tensor, geometry: LayerGeometry, image_size: int,
                         fraction: float) -> torch.Tensor:
    """(N, H, W) maps -> (N, S, S) bool: bilinear interpolation between the positions' centres in the
    image (Network Dissection upsamples the same way), thresholded at ``fraction`` of each image's maximum."""
    n, height, width = maps.shape
    pixels = torch.arange(image_size, dtype=torch.float32)
    # Map pixel p to the fractional map index (p - offset) / stride, then to grid_sample's [-1, 1].
    gy = 2 * ((pixels - geometry.offset) / geometry.stride) / max(height - 1, 1) - 1
    gx = 2 * ((pixels - geometry.offset) / geometry.stride) / max(width - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).expand(n, -1, -1, -1)
    up = torch.nn.functional.grid_sample(maps[:, None].float(), grid, mode="bilinear", padding_mode="border",
                                         align_corners=True)[:, 0]
    peak = maps.float().amax(dim=(1, 2))[:, None, None]
    return (up >= fraction * peak) & (peak > 0)


def category_masks(objects, frame_size: int, input_size: int) -> dict[str, np.ndarray]:
    """A frame's objects (video-pixel masks) -> {category: union mask on the network input crop}."""
    top = (frame_size - input_size) // 2
    out: dict[str, np.ndarray] = {}
    for obj in objects:
        # The same scale-and-centre-crop as ingest and the network's input, so pixels line up.
        mask = resize_center_crop(obj.mask, frame_size, nearest=True)[top:top + input_size, top:top + input_size]
        out[obj.category] = out.get(obj.category, np.zeros_like(mask)) | mask
    return out


def dissect(run_dir: Path, truth_of: Callable[[ds.FrameRecord], list], layer: str | None = None,
            settings: UnitSettings = UNITS) -> list[UnitLabel]:
    """Label every unit of RUN_DIR/units_<layer>.npz (written by ``ambient units``).

    ``truth_of(record)`` gives the objects (category, mask in video pixels) visible in a frame.
    """
    path = units_file(run_dir, layer or settings.layer)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run `ambient units {run_dir}` first")
    with np.load(path) as data:
        frame_ids, maps, meta = data["frame_ids"], torch.from_numpy(data["maps"].astype(np.float32)), \
            json.loads(str(data["meta"]))
    geometry = LayerGeometry(meta["rf_size"], meta["stride"], meta["offset"])
    size = meta["input_size"]
    records = {r.frame_id: r for r in ds.load_manifest(meta["data_dir"])}
    truths = {row: category_masks(truth_of(records[row]), meta["frame_size"], size)
              for row in np.unique(frame_ids[frame_ids >= 0]).tolist()}
    sounding = {name: c.characteristic_sound for name, c in category_by_name().items()}
    kept = torch.from_numpy(frame_ids >= 0)
    # All units' maps at once (in chunks): per-call overhead dominates for small maps.
    flat = maps[kept]
    regions = torch.cat([receptive_field_masks(part, geometry, size, meta["rf_radius"], meta["activation_fraction"])
                         for part in flat.split(512)]).numpy()
    active = torch.cat([upsampled_activation(part, geometry, size, meta["activation_fraction"])
                        for part in flat.split(512)]).numpy()
    ends = np.cumsum(kept.sum(dim=1).numpy())
    labels = []
    for unit, (start, end) in enumerate(zip([0, *ends[:-1]], ends)):
        rows = frame_ids[unit][frame_ids[unit] >= 0].tolist()
        category, precision, iou = label_unit(regions[start:end], active[start:end], [truths[row] for row in rows],
                                              settings.overlap_fraction)
        labels.append(UnitLabel(unit, category, precision, iou, sounding.get(category, False)))
    return labels


def write_dissection(run_dir: Path, labels: Sequence[UnitLabel], layer: str) -> Path:
    path = dissection_file(run_dir)
    ds.write_json_atomic(path, [{**asdict(label), "layer": layer} for label in labels])
    return path


def detector_counts(labels: Sequence[UnitLabel], threshold: float) -> dict[str, int]:
    """How many units are detectors (precision >= threshold), split by the category's sound."""
    detectors = [label for label in labels if label.category and label.precision >= threshold]
    return {"detectors": len(detectors), "sounding": sum(d.sounding for d in detectors),
            "silent": sum(not d.sounding for d in detectors),
            "categories": len({d.category for d in detectors})}
