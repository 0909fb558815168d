"""Ground truth beside the videos, and a pure reader of what is seen and heard at a moment.

Layout of a world directory (written by ``ambient world``)::

    world.json                 summary: preset, seed, objects mode, counts per category
    videos/<stem>.mp4          the videos (ingest these)
    truth/<stem>.json          scene, duration, camera (canvas_width, x_start, x_end), objects
                               (category, sounding, bbox on the canvas, mask index), sounds
                               (category, on_screen, object, audible intervals in seconds)
    truth/<stem>_masks.npz     masks (n_objects, H, canvas_width) bool, visible pixels on the canvas

Objects are static on a canvas wider than the frame and the camera pans across it linearly: frame i
shows the canvas columns from `camera_x` on, so a frame's masks are the canvas masks cropped there.
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
MIN_PIXELS = 50                    # fewer visible pixels than this and an object is not in the picture


@dataclass
class ObjectTruth:
    category: str
    sounding: bool                 # the category's characteristic_sound flag
    mask: np.ndarray               # HxW bool, video pixel coordinates of that frame
    audible: bool = False          # its own sound is heard at that moment (a source on screen)


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


def world_of_data(data_dir: str | Path) -> Path | None:
    """The generated world whose videos DATA_DIR was ingested from (its ingest report's videos folder), else None:
    the truth `dissect --truth`, `probe --world` and `localize` read."""
    from model.data.dataset import read_report

    videos_dir = read_report(data_dir).get("videos_dir")
    try:
        return find_world_dir(videos_dir) if videos_dir else None
    except FileNotFoundError:
        return None


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
    """(truth record, canvas masks (n_objects, H, canvas_width)) of a video given by relative path, file name or stem."""
    truth_dir = find_world_dir(world_dir) / TRUTH_DIR
    stem = Path(video).stem
    if not (truth_dir / f"{stem}.json").exists():
        raise FileNotFoundError(f"{video}: no ground truth in {truth_dir}")
    return _load(truth_dir, stem)


def camera_x(record: dict, time_s: float) -> int:
    """Left edge on the canvas of the frame shown at `time_s`: linear from x_start (first frame) to x_end (last)."""
    camera, n_frames = record["camera"], int(round(record["duration"] * record["fps"]))
    frame = min(max(int(np.floor(time_s * record["fps"] + 1e-6)), 0), n_frames - 1)
    return int(round(camera["x_start"] + (camera["x_end"] - camera["x_start"]) * frame / max(n_frames - 1, 1)))


def frame_truth(world_dir: str | Path, video: str | Path, time_s: float) -> FrameTruth:
    """What is on screen (with masks in video pixels) and which sounds are audible in `video` at `time_s`."""
    record, masks = video_truth(world_dir, video)
    left = camera_x(record, time_s)
    window = masks[:, :, left:left + record["width"]]
    heard = [s for s in record["sounds"] if any(start <= time_s < end for start, end in s["intervals"])]
    sources = {s.get("object") for s in heard if s.get("on_screen")}
    objects = [ObjectTruth(o["category"], o["sounding"], window[o["mask"]], o.get("id", o["mask"]) in sources)
               for o in record["objects"] if window[o["mask"]].sum() >= MIN_PIXELS]
    audible = sorted({s["category"] for s in heard})
    return FrameTruth(scene=record["scene"], objects=objects, audible=audible)
