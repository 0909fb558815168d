"""Ground truth beside the videos, and a pure reader of what is seen and heard at a moment.

Layout of a world directory (written by ``ambient world``)::

    world.json                 summary: preset, seed, objects mode, counts per category
    videos/<stem>.mp4          the videos (ingest these)
    truth/<stem>.json          scene, duration, objects (category, sounding, bbox, mask index),
                               sounds (category, on_screen, object, audible intervals in seconds)
    truth/<stem>_masks.npz     masks (n_objects, H, W) bool, visible pixels in video coordinates

Objects are static, so one mask per object holds for every frame.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

SUMMARY = "world.json"
TRUTH_DIR = "truth"
VIDEOS_DIR = "videos"


@dataclass
class ObjectTruth:
    category: str
    sounding: bool                 # the category's characteristic_sound flag
    mask: np.ndarray               # HxW bool, video pixel coordinates


@dataclass
class FrameTruth:
    scene: str
    objects: list[ObjectTruth] = field(default_factory=list)
    audible: list[str] = field(default_factory=list)     # categories heard at that moment, on screen or off


def find_world_dir(path: str | Path) -> Path:
    """The world directory holding `path` (the world itself, its videos folder, or a video in it)."""
    path = Path(path).resolve()
    for candidate in (path, *path.parents):
        if (candidate / SUMMARY).exists():
            return candidate
    raise FileNotFoundError(f"{path}: not inside a generated world (no {SUMMARY} here or above)")


def write_truth(world_dir: Path, stem: str, record: dict, masks: np.ndarray) -> None:
    truth_dir = world_dir / TRUTH_DIR
    np.savez_compressed(truth_dir / f"{stem}_masks.npz", masks=masks.astype(bool))
    (truth_dir / f"{stem}.json").write_text(json.dumps(record, indent=1))


@lru_cache(maxsize=64)
def _load(truth_dir: Path, stem: str) -> tuple[dict, np.ndarray]:
    record = json.loads((truth_dir / f"{stem}.json").read_text())
    with np.load(truth_dir / f"{stem}_masks.npz") as data:
        masks = data["masks"]
    return record, masks


def video_truth(world_dir: str | Path, video: str | Path) -> tuple[dict, np.ndarray]:
    """(truth record, masks (n_objects, H, W)) of a video given by relative path, file name or stem."""
    truth_dir = find_world_dir(world_dir) / TRUTH_DIR
    stem = Path(video).stem
    if not (truth_dir / f"{stem}.json").exists():
        raise FileNotFoundError(f"{video}: no ground truth in {truth_dir}")
    return _load(truth_dir, stem)


def frame_truth(world_dir: str | Path, video: str | Path, time_s: float) -> FrameTruth:
    """What is on screen (with masks) and which sounds are audible in `video` at `time_s`."""
    record, masks = video_truth(world_dir, video)
    objects = [ObjectTruth(o["category"], o["sounding"], masks[o["mask"]]) for o in record["objects"]]
    audible = sorted({s["category"] for s in record["sounds"]
                      if any(start <= time_s < end for start, end in s["intervals"])})
    return FrameTruth(scene=record["scene"], objects=objects, audible=audible)
