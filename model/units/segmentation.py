"""Segmentation masks for ``ambient dissect --masks MASKS_DIR --classes CLASSES.csv``: label maps,
their classes, and the two per-unit, per-class scores (model/units/dissect.py runs the pass over the pool).

Format:

- MASKS_DIR holds one single-channel PNG label map per pool image (pixel value = class index; a
  palette PNG such as PASCAL VOC's counts by palette index), found recursively and matched to the
  pool image with the same relative path (suffix aside) or, failing that, the same file stem. Pool
  images without a mask are left out of both scores and counted.
- CLASSES.csv has the columns ``index,name`` and optionally ``characteristic_sound`` (1/0, true/false;
  without it, a name of model/data/object_categories.csv takes that flag, any other is silent). Pixels
  whose value the CSV does not list (unlabelled, void, 255 borders) are ignored: they count in
  neither a unit's activation area nor any class's area.

A mask gets the pool image's geometry (short side scaled to the frame size, centre crop, then the
network's centre crop), nearest-neighbour, so its pixels line up with the network's input.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.data import dataset as ds
from model.categories import category_by_name
from model.data.media import resize_center_crop

IGNORED = -1      # a pixel of no listed class
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes"), ("0", "false", "no", "")


@dataclass(frozen=True)
class SegmentationClass:
    index: int                    # pixel value in the label maps
    name: str
    characteristic_sound: bool


def read_classes(path: str | Path) -> list[SegmentationClass]:
    """CLASSES.csv -> its classes in file order; ValueError naming the file and line for bad rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such classes file")
    known = category_by_name()
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = {c.strip() for c in reader.fieldnames or []}
        if not {"index", "name"} <= columns:
            raise ValueError(f"{path}: needs the columns index,name (and optionally characteristic_sound); "
                             f"has {sorted(columns)}")
        classes: list[SegmentationClass] = []
        for line, row in enumerate(reader, start=2):
            row = {key.strip(): (value or "").strip() for key, value in row.items() if key}
            try:
                index = int(row["index"])
            except ValueError:
                raise ValueError(f"{path}:{line}: index {row['index']!r} is not an integer") from None
            if not row["name"]:
                raise ValueError(f"{path}:{line}: the class has no name")
            sound = row.get("characteristic_sound", "").lower()
            if sound not in TRUE_WORDS + FALSE_WORDS:
                raise ValueError(f"{path}:{line}: characteristic_sound {sound!r} is not 1/0 or true/false")
            flag = sound in TRUE_WORDS if sound else (known[row["name"]].characteristic_sound
                                                      if row["name"] in known else False)
            classes.append(SegmentationClass(index, row["name"], flag))
    for kind, values in (("index", [c.index for c in classes]), ("name", [c.name for c in classes])):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{path}: {kind} repeated: {', '.join(repeated)}")
    if not classes:
        raise ValueError(f"{path}: lists no classes")
    return classes


def match_masks(records: Sequence[ds.FrameRecord], masks_dir: str | Path) -> dict[int, Path]:
    """Pool row -> its label map: same relative path (suffix aside) in MASKS_DIR, else same file stem.

    A stem shared by several masks, or by several pool images, matches nothing by stem (ambiguous).
    """
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"{masks_dir}: no such masks folder")
    masks = sorted(masks_dir.rglob("*.png"))
    by_path = {path.relative_to(masks_dir).with_suffix("").as_posix(): path for path in masks}
    stems: dict[str, list[Path]] = {}
    for path in masks:
        stems.setdefault(path.stem, []).append(path)
    pool_stems: dict[str, int] = {}
    for r in records:
        pool_stems[Path(r.image).stem] = pool_stems.get(Path(r.image).stem, 0) + 1
    matched = {}
    for r in records:
        key, stem = Path(r.image).with_suffix("").as_posix(), Path(r.image).stem
        if key in by_path:
            matched[r.frame_id] = by_path[key]
        elif len(stems.get(stem, ())) == 1 and pool_stems[stem] == 1:
            matched[r.frame_id] = stems[stem][0]
    return matched


def read_label_map(path: Path, classes: Sequence[SegmentationClass], frame_size: int, input_size: int) -> np.ndarray:
    """(input_size, input_size) int64: the position of each pixel's class in ``classes``, IGNORED elsewhere."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(f"{path}: a {image.mode} image; label maps are single-channel class indices "
                                 f"(colour-coded masks must be converted to indices first)")
            values = np.asarray(image).astype(np.int64)
    except OSError as error:
        raise ValueError(f"{path}: not a readable PNG label map ({error})") from error
    # PIL resizes 32-bit integer images with nearest neighbour: class values are never blended.
    values = resize_center_crop(values.astype(np.int32), frame_size, nearest=True).astype(np.int64)
    top = (frame_size - input_size) // 2
    values = values[top:top + input_size, top:top + input_size]
    lookup = np.full(max(max(c.index for c in classes), int(values.max(initial=0))) + 1, IGNORED, np.int64)
    for position, c in enumerate(classes):
        if c.index >= 0:
            lookup[c.index] = position
    return np.where(values >= 0, lookup[values.clip(0)], IGNORED)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, S, S) class positions (IGNORED allowed) -> (N, S*S, C) float32, all zeros on ignored pixels."""
    flat = labels.reshape(labels.shape[0], -1)
    return (flat[..., None] == torch.arange(num_classes, device=labels.device)).float()


class IouTally:
    """Network Dissection's IoU of each (unit, class), summed over the pool as images stream past:
    intersection = labelled pixels both above the unit's threshold and of the class; union = the unit's
    labelled pixels above threshold + the class's pixels - intersection. Memory: three small arrays."""

    def __init__(self, units: int, num_classes: int):
        self.intersection = torch.zeros((units, num_classes), dtype=torch.float64)
        self.active = torch.zeros(units, dtype=torch.float64)
        self.labelled = torch.zeros(num_classes, dtype=torch.float64)

    def update(self, active: torch.Tensor, labels: torch.Tensor) -> None:
        """``active`` (N, units, S, S) bool, ``labels`` (N, S, S) class positions."""
        classes = one_hot(labels, self.labelled.shape[0])                               # (N, P, C)
        # One product gives both: the classes' columns, and a last column "any class" (the labelled pixels).
        columns = torch.cat([classes, (labels.flatten(1) >= 0).float()[..., None]], dim=2)
        counts = torch.bmm(active.flatten(2).float(), columns).sum(dim=0).double().cpu()   # (U, C + 1)
        self.intersection += counts[:, :-1]
        self.active += counts[:, -1]
        self.labelled += classes.sum(dim=(0, 1)).double().cpu()

    def iou(self) -> np.ndarray:
        """(units, classes) float64; 0 where the union is empty."""
        union = self.active[:, None] + self.labelled[None, :] - self.intersection
        return torch.where(union > 0, self.intersection / union.clamp(min=1), 0.0).numpy()


def contains_classes(regions: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     overlap_fraction: float) -> torch.Tensor:
    """(K, C) bool: whether each of K regions (K, S, S) of one image with ``labels`` (S, S) shows each class
    (``model.units.dissect.contains`` for all classes at once): their overlap is at least ``overlap_fraction`` of
    the smaller of region and class mask."""
    classes = one_hot(labels[None], num_classes)[0]                                   # (P, C)
    flat = regions.flatten(1).float()                                                 # (K, P)
    overlap = flat @ classes                                                          # (K, C)
    smaller = torch.minimum(flat.sum(dim=1, keepdim=True), classes.sum(dim=0, keepdim=True))
    return (smaller > 0) & (overlap >= overlap_fraction * smaller)
