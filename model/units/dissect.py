"""Automatic unit labels: from the demo world's ground truth (``ambient dissect RUN_DIR --truth``,
``dissect``) or from segmentation masks of any pool (``--masks MASKS_DIR --classes CLASSES.csv``,
``dissect_masks``; the format is in model/units/segmentation.py).

An image counts as containing a category when the unit's masked region (the paper's receptive-field
circles) and the category's pixels overlap by at least ``overlap_fraction`` of the smaller of the two:
the object fills most of the region (a large object or stuff seen through the region) or the region
holds most of the object (a small object inside it). Either way a person looking at the masked image
would see the object, which is what the paper's annotators were asked. A unit's precision for a
category is the fraction of its top images containing it (the paper's 60% rule for detectors);
its IoU is Network Dissection's: the unit's thresholded, upsampled activation against the category's
masks, intersections and unions summed over the top images.

With masks, both scores are computed for every unit and class, over the whole pool for the IoU:
the paper's precision (the share of the unit's top images, those with a mask, whose region
contains the class) and Network Dissection's IoU (pixels where the unit's map, upsampled to the
image, exceeds the unit's top-0.5% activation quantile over the pool, against the class's pixels,
summed over every pool image with a mask). A unit's ``category`` is the paper's (best precision,
IoU breaking ties), as with the truth; ``netdissect_category`` is Network Dissection's (best IoU,
when it exceeds 0.04). The pass streams the pool: memory does not depend on its size.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.data import dataset as ds
from model.data import pool as pl
from model.units.activations import LayerGeometry, receptive_field_masks
from model.categories import category_by_name
from model.data.media import resize_center_crop
from model.network.run import RunFolder, dissection_file, dissection_scores_file, save_npz_atomic, units_file
from model.units.segmentation import (IouTally, SegmentationClass, contains_classes, match_masks, read_classes,
                                      read_label_map)
from model.settings import UNITS, UnitSettings
from model.units.top_images import _pool_crops, load_network

# Upsampled maps are handled this many (unit x pixel) values at a time: bounds memory at any image size.
VALUES_PER_CHUNK = 1 << 24

@dataclass(frozen=True)
class UnitLabel:
    unit: int
    category: str | None       # None: no category in any of the unit's top images
    precision: float
    iou: float
    sounding: bool             # the category has a characteristic sound


@dataclass(frozen=True)
class MaskUnitLabel(UnitLabel):
    """A unit's labels from segmentation masks: the paper's (above) and Network Dissection's."""

    netdissect_category: str | None = None    # the class of best IoU over the pool, when > min_iou
    netdissect_iou: float = 0.0


def contains(region: np.ndarray, mask: np.ndarray, overlap_fraction: float) -> bool:
    """Whether the unit's region shows the object (see the module docstring)."""
    smaller = min(region.sum(), mask.sum())
    return bool(smaller > 0 and (region & mask).sum() >= overlap_fraction * smaller)


def category_scores(regions: np.ndarray, active: np.ndarray, truths: Sequence[dict[str, np.ndarray]],
                    overlap_fraction: float) -> dict[str, tuple[float, float]]:
    """{category: (precision, IoU)} of one unit over its top images, for every category in them.

    ``regions`` and ``active`` (N, S, S) bool: the masked regions and the thresholded activations;
    ``truths[i]`` maps each category in image i to its (S, S) bool mask.
    """
    if not len(regions):
        return {}
    region_sizes = regions.sum(axis=(1, 2))
    active_sizes = active.sum(axis=(1, 2))
    scores = {}
    for category in sorted({c for truth in truths for c in truth}):
        empty = np.zeros(regions.shape[1:], bool)
        masks = np.stack([truth.get(category, empty) for truth in truths])          # (N, S, S)
        mask_sizes = masks.sum(axis=(1, 2))
        smaller = np.minimum(region_sizes, mask_sizes)
        hits = (smaller > 0) & ((regions & masks).sum(axis=(1, 2)) >= overlap_fraction * smaller)
        inter = (active & masks).sum()
        union = active_sizes.sum() + mask_sizes.sum() - inter
        scores[category] = (float(hits.mean()), float(inter / union) if union else 0.0)
    return scores


def best_category(scores: dict[str, tuple[float, float]]) -> tuple[str | None, float, float]:
    """(category, precision, IoU) of the best precision, IoU breaking ties; (None, 0, 0) when none scores."""
    best: tuple[float, float, str | None] = (0.0, 0.0, None)
    for category, (precision, iou) in scores.items():
        if (precision, iou) > best[:2]:
            best = (precision, iou, category)
    return best[2], best[0], best[1]


def label_unit(regions: np.ndarray, active: np.ndarray, truths: Sequence[dict[str, np.ndarray]],
               overlap_fraction: float) -> tuple[str | None, float, float]:
    """(best category, its precision, its IoU) for one unit's top images (``category_scores``).
    Precision ranks the categories; IoU breaks ties."""
    return best_category(category_scores(regions, active, truths, overlap_fraction))


def units_layer(run_dir: Path | RunFolder, layer: str | None) -> str:
    """The layer to dissect: ``layer``, or when None the one layer whose units RUN_DIR holds.

    FileNotFoundError / ValueError say which layers the run holds (``output`` for a TorchScript or
    torch.export network), never to redo an extraction that is there.
    """
    run = RunFolder.of(run_dir)
    run_dir, layers = run.path, run.layers
    if layer is not None and layer in layers:
        return layer
    if layer is None and len(layers) == 1:
        return layers[0]
    if not layers:
        raise FileNotFoundError(f"{run_dir}: no units to dissect (no units_<layer>.npz); "
                                f"`ambient units {run_dir} --pool DIR` finds them")
    held = ", ".join(layers)
    if layer is None:
        raise ValueError(f"{run_dir} holds the units of {len(layers)} layers ({held}): choose one with --layer")
    raise FileNotFoundError(f"{run_dir} holds no units of layer {layer!r}; it holds those of {held} "
                            f"(choose with --layer)")


def upsample_maps(maps: torch.Tensor, geometry: LayerGeometry, image_size: int) -> torch.Tensor:
    """(N, H, W) maps -> (N, S, S) float32: bilinear interpolation between the positions' centres in the
    image (Network Dissection upsamples the same way), the border values beyond the outermost centres."""
    n, height, width = maps.shape
    pixels = torch.arange(image_size, dtype=torch.float32, device=maps.device)
    # Map pixel p to the fractional map index (p - offset) / stride, then to grid_sample's [-1, 1].
    gy = 2 * ((pixels - geometry.offset) / geometry.stride) / max(height - 1, 1) - 1
    gx = 2 * ((pixels - geometry.offset) / geometry.stride) / max(width - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).expand(n, -1, -1, -1)
    return torch.nn.functional.grid_sample(maps[:, None].float(), grid, mode="bilinear", padding_mode="border",
                                           align_corners=True)[:, 0]


def bilinear_weights(positions: int, geometry: LayerGeometry, image_size: int, device=None) -> torch.Tensor:
    """(image_size, positions) weights: row p interpolates pixel p between the map positions whose centres
    surround it, the border value beyond the outermost centres (``upsample_maps``' interpolation, separable)."""
    where = ((torch.arange(image_size, dtype=torch.float32, device=device) - geometry.offset) / geometry.stride)
    where = where.clamp(0, positions - 1)
    low = where.floor().long().clamp(max=max(positions - 2, 0))
    high_weight = where - low
    weights = torch.zeros((image_size, positions), device=device)
    weights.scatter_(1, low[:, None], (1 - high_weight)[:, None])
    if positions > 1:
        weights.scatter_add_(1, (low + 1)[:, None], high_weight[:, None])
    return weights


def upsampled_activation(maps: torch.Tensor, geometry: LayerGeometry, image_size: int,
                         fraction: float) -> torch.Tensor:
    """(N, H, W) maps -> (N, S, S) bool: the upsampled maps at or above ``fraction`` of each image's maximum."""
    up = upsample_maps(maps, geometry, image_size)
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


def truth_scores(frame_ids: np.ndarray, maps: torch.Tensor, meta: dict, truth_of: Callable[[ds.FrameRecord], list],
                 settings: UnitSettings = UNITS) -> list[dict[str, tuple[float, float]]]:
    """Per unit, ``category_scores`` of its top images: ``frame_ids`` (units, k) pool rows (-1: none) and
    their ``maps`` (units, k, H, W), placed as a units file's ``meta`` says."""
    geometry = LayerGeometry(meta["rf_size"], meta["stride"], meta["offset"])
    size = meta["input_size"]
    records = {r.frame_id: r for r in ds.load_manifest(meta["data_dir"])}
    truths = {row: category_masks(truth_of(records[row]), meta["frame_size"], size)
              for row in np.unique(frame_ids[frame_ids >= 0]).tolist()}
    kept = torch.from_numpy(frame_ids >= 0)
    # All units' maps at once (in chunks): per-call overhead dominates for small maps.
    flat = maps[kept]
    regions = torch.cat([receptive_field_masks(part, geometry, size, meta["rf_radius"], meta["activation_fraction"])
                         for part in flat.split(512)]).numpy()
    active = torch.cat([upsampled_activation(part, geometry, size, meta["activation_fraction"])
                        for part in flat.split(512)]).numpy()
    ends = np.cumsum(kept.sum(dim=1).numpy())
    scores = []
    for unit, (start, end) in enumerate(zip([0, *ends[:-1]], ends)):
        rows = frame_ids[unit][frame_ids[unit] >= 0].tolist()
        scores.append(category_scores(regions[start:end], active[start:end], [truths[row] for row in rows],
                                      settings.overlap_fraction))
    return scores


def truth_labels(scores: Sequence[dict[str, tuple[float, float]]]) -> list[UnitLabel]:
    """Each unit's label from its ``truth_scores``, with its category's characteristic sound."""
    sounding = {name: c.characteristic_sound for name, c in category_by_name().items()}
    return [UnitLabel(unit, *best_category(unit_scores), sounding.get(best_category(unit_scores)[0], False))
            for unit, unit_scores in enumerate(scores)]


def dissect(run_dir: Path, truth_of: Callable[[ds.FrameRecord], list], layer: str | None = None,
            settings: UnitSettings = UNITS) -> list[UnitLabel]:
    """Label every unit of RUN_DIR/units_<layer>.npz (written by ``ambient units``).

    ``truth_of(record)`` gives the objects (category, mask in video pixels) visible in a frame.
    """
    path = units_file(run_dir, units_layer(run_dir, layer))
    with np.load(path) as data:
        frame_ids, maps, meta = data["frame_ids"], torch.from_numpy(data["maps"].astype(np.float32)), \
            json.loads(str(data["meta"]))
    return truth_labels(truth_scores(frame_ids, maps, meta, truth_of, settings))


@dataclass(frozen=True)
class MaskScores:
    """Both scores of every (unit, class) over a pool with masks (``score_units``)."""

    classes: list[SegmentationClass]
    precision: np.ndarray       # (units, classes): share of the unit's top images with a mask that contain the class
    iou: np.ndarray             # (units, classes): Network Dissection's IoU over every pool image with a mask
    top_with_masks: np.ndarray  # (units,): how many of the unit's top images have a mask
    images: int                 # pool images with a mask
    missing: int                # pool images without one (left out of both scores)
    unreadable: list[str] = field(default_factory=list)   # "path: why" of label maps skipped (left out too)


def score_units(network, meta: dict, frame_ids: np.ndarray, top_maps: torch.Tensor, thresholds: torch.Tensor,
                records: Sequence[ds.FrameRecord], masks: dict[int, Path], classes: Sequence[SegmentationClass],
                settings: UnitSettings = UNITS, device: str | torch.device = "cpu",
                progress: Callable[[int], None] = lambda n: None) -> MaskScores:
    """One pass over the pool images that have masks (see the module docstring).

    ``frame_ids`` (units, k) and ``top_maps`` (units, k, H, W) are the units file's top images;
    ``thresholds`` (units,) each unit's activation quantile over the pool.
    """
    geometry = LayerGeometry(meta["rf_size"], meta["stride"], meta["offset"])
    size, units, num_classes = meta["input_size"], frame_ids.shape[0], len(classes)
    tally = IouTally(units, num_classes)
    hits = torch.zeros((units, num_classes), dtype=torch.float64)
    top_counts = torch.zeros(units, dtype=torch.float64)
    slots: dict[int, list[tuple[int, int]]] = {}          # pool row -> (unit, rank) of the top images it is
    for unit, rank in zip(*np.nonzero(frame_ids >= 0)):
        slots.setdefault(int(frame_ids[unit, rank]), []).append((int(unit), int(rank)))
    with_masks = [r for r in records if r.frame_id in masks]
    thresholds = thresholds.to(device)[:, None, None]
    per_chunk = max(1, VALUES_PER_CHUNK // (units * size * size))
    weights_y = weights_x = None
    unreadable: list[str] = []
    for crops, positions in _pool_crops(Path(meta["data_dir"]), with_masks, network, settings, device):
        maps = network.activations(crops)                                             # (B, U, h, w)
        if weights_y is None:
            weights_y = bilinear_weights(maps.shape[2], geometry, size, maps.device)
            weights_x = bilinear_weights(maps.shape[3], geometry, size, maps.device)
        progress(len(positions))
        rows, label_maps, kept = [], [], []
        for b, position in enumerate(positions.tolist()):
            row = with_masks[position].frame_id
            try:
                label_maps.append(read_label_map(masks[row], classes, meta["frame_size"], size))
            except ValueError as error:      # one bad label map is skipped and reported, not the whole pass
                unreadable.append(str(error))
                continue
            rows.append(row)
            kept.append(b)
        if not rows:
            continue
        maps = maps[kept]
        labels = torch.from_numpy(np.stack(label_maps)).to(device)                     # (B, S, S)
        for start in range(0, len(rows), per_chunk):
            up = weights_y @ maps[start:start + per_chunk].float() @ weights_x.T       # (b, U, S, S)
            tally.update(up > thresholds, labels[start:start + per_chunk])
        for b, row in enumerate(rows):
            if row not in slots:
                continue
            pair_units, pair_ranks = (torch.tensor(column) for column in zip(*slots[row]))
            regions = receptive_field_masks(top_maps[pair_units, pair_ranks].to(device), geometry, size,
                                            meta["rf_radius"], meta["activation_fraction"])
            shown = contains_classes(regions, labels[b], num_classes, settings.overlap_fraction)
            hits.index_add_(0, pair_units, shown.double().cpu())
            top_counts.index_add_(0, pair_units, torch.ones(len(pair_units), dtype=torch.float64))
    precision = torch.where(top_counts[:, None] > 0, hits / top_counts.clamp(min=1)[:, None], 0.0)
    return MaskScores(list(classes), precision.numpy(), tally.iou(), top_counts.numpy().astype(int),
                      len(with_masks) - len(unreadable), len(records) - len(with_masks), unreadable)


def label_units(scores: MaskScores, settings: UnitSettings = UNITS) -> list[MaskUnitLabel]:
    """Each unit's two labels from its scores: the paper's (best precision, IoU breaking ties; None when
    both are 0 for every class) and Network Dissection's (best IoU, when above ``settings.min_iou``)."""
    names = [c.name for c in scores.classes]
    sounding = {c.name: c.characteristic_sound for c in scores.classes}
    labels = []
    for unit, (precision, iou) in enumerate(zip(scores.precision, scores.iou)):
        best = max(range(len(names)), key=lambda c: (precision[c], iou[c]))
        category = names[best] if (precision[best], iou[best]) > (0.0, 0.0) else None
        top_iou = int(np.argmax(iou))
        labels.append(MaskUnitLabel(unit, category, float(precision[best]) if category else 0.0,
                                    float(iou[best]) if category else 0.0, sounding.get(category, False),
                                    names[top_iou] if iou[top_iou] > settings.min_iou else None,
                                    float(iou[top_iou])))
    return labels


def dissect_masks(run_dir: Path, masks_dir: Path, classes_csv: Path, layer: str | None = None,
                  settings: UnitSettings = UNITS, device: str | torch.device = "cpu",
                  show_progress: bool = True) -> tuple[list[MaskUnitLabel], MaskScores]:
    """Label every unit of RUN_DIR/units_<layer>.npz against the label maps of MASKS_DIR (one pass over
    the pool with the network the units file names); ValueError / FileNotFoundError name bad input."""
    run = RunFolder(run_dir)
    path = run.units_file(units_layer(run, layer))
    with np.load(path) as data:
        if "thresholds" not in data.files:
            raise ValueError(f"{path}: written before activation quantiles were kept; run `ambient units` again")
        frame_ids, thresholds = data["frame_ids"], torch.from_numpy(data["thresholds"])
        top_maps, meta = torch.from_numpy(data["maps"].astype(np.float32)), json.loads(str(data["meta"]))
    classes = read_classes(classes_csv)
    records = pl.pool_records(meta["data_dir"], meta.get("split", "all"))
    if pl.pool_digest(pl.load_pool(meta["data_dir"])) != meta.get("pool_digest"):
        raise ValueError(f"{meta['data_dir']}: its images have changed since `ambient units` analysed it "
                         f"(rows would name other images); run `ambient units` again")
    masks = match_masks(records, masks_dir)
    if not masks:
        raise ValueError(f"{masks_dir}: no label map matches any of the {len(records)} pool images of "
                         f"{meta['data_dir']} (by relative path or file stem)")
    network = load_network(run, meta["layer"], meta.get("model_spec"),
                           Path(meta["weights"]) if meta.get("weights") else None, device)
    stored = LayerGeometry(meta["rf_size"], meta["stride"], meta["offset"])
    if not stored.agrees_with(network.geometry):     # e.g. a traced network's file from before geometry was measured
        raise ValueError(f"{path}: its maps were placed with {stored}, but the network measures {network.geometry}; "
                         f"its top images and masks are misplaced, so extract its units again (`ambient units`)")
    with tqdm(total=len(masks), desc="masks", unit="image", disable=not show_progress) as bar:
        scores = score_units(network, meta, frame_ids, top_maps, thresholds, records, masks, classes, settings,
                             device, bar.update)
    return label_units(scores, settings), scores


def write_dissection(run_dir: Path, labels: Sequence[UnitLabel], layer: str) -> Path:
    path = dissection_file(run_dir)
    ds.write_json_atomic(path, [{**asdict(label), "layer": layer} for label in labels])
    return path


def write_mask_scores(run_dir: Path, layer: str | None, scores: MaskScores) -> Path:
    """Both scores of every unit and class (RUN_DIR/dissection_<layer>.npz, see model/network/run.py)."""
    path = dissection_scores_file(run_dir, layer)
    save_npz_atomic(path, classes=np.array([c.name for c in scores.classes]),
                    class_indices=np.array([c.index for c in scores.classes]),
                    class_sounds=np.array([c.characteristic_sound for c in scores.classes]), precision=scores.precision,
                    iou=scores.iou, top_with_masks=scores.top_with_masks)
    return path


def detector_counts(labels: Sequence[UnitLabel], threshold: float) -> dict[str, int]:
    """How many units are detectors (precision >= threshold), split by the category's sound."""
    detectors = [label for label in labels if label.category and label.precision >= threshold]
    return {"detectors": len(detectors), "sounding": sum(d.sounding for d in detectors),
            "silent": sum(not d.sounding for d in detectors),
            "categories": len({d.category for d in detectors})}
