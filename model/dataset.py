"""The dataset directory: one source of truth for where ingest puts things.

Layout of DATA_DIR (written by ``ambient ingest``)::

    videos/<video_id>/video.json      per-video record: source path, duration, frames (see FrameRecord), warnings
    videos/<video_id>/features.npz    textures (10, 502) float32, spectrum (10, 32) float32, silent (10,) bool
    videos/<video_id>/frame_XX.jpg    256x256 frames
    videos/<video_id>/clip_XX.mp3     the 3.75 s around each frame
    videos/<video_id>/skipped.json    instead of the above for an unusable video: {"video", "videos_dir", "reason", "file"}
    manifest.jsonl                    every frame of every finished video, one JSON object a line
    textures.npy                      (N, 502) float32, row i = line i of manifest.jsonl
    spectrum.npy                      (N, 32) float32, same order
    ingest_report.json                {"videos_dir", "ingested": [video, ...], "skipped": [{"path", "reason"}], "frames",
                                       "warnings": [{"path", "warning"}]} (see model.ingest.report_table)
    labels/<kind>.npz                 written by ``ambient labels`` (model/labels.py)
    shards/                           the frames as WebDataset tar shards for streaming training (model/shards.py)

A video directory is complete only when ``video.json`` exists: it is written last,
atomically, so a killed ingest leaves nothing half-finished that looks done.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

MANIFEST = "manifest.jsonl"
TEXTURES = "textures.npy"
SPECTRUM = "spectrum.npy"
REPORT = "ingest_report.json"
LABELS_DIR = "labels"
SHARDS_DIR = "shards"


@dataclass
class FrameRecord:
    frame_id: int        # row in manifest.jsonl / textures.npy (assigned at merge)
    video_id: str        # stable id derived from the video's relative path
    video: str           # path of the source video relative to the videos folder
    frame_index: int     # 0..frames_per_video-1 within the video
    time: float          # seconds on the video's timeline (its timestamps; most files start at 0)
    image: str           # path relative to DATA_DIR
    clip: str            # path relative to DATA_DIR
    split: str           # "train" or "test"
    silent: bool


def is_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a finished dataset folder (ingest writes the manifest last)."""
    return (Path(path) / MANIFEST).is_file()


def labels_file(data_dir: str | Path, kind: str) -> Path:
    """Where ``ambient labels --kind KIND`` writes (model/labels.py)."""
    return Path(data_dir) / LABELS_DIR / f"{kind}.npz"


def shards_dir(data_dir: str | Path) -> Path:
    """Where ``ambient shards`` writes the frames as tar shards (model/shards.py)."""
    return Path(data_dir) / SHARDS_DIR


def read_report(data_dir: str | Path) -> dict:
    """DATA_DIR/ingest_report.json, or {} when ingest wrote none (a dataset assembled by hand)."""
    path = Path(data_dir) / REPORT
    return json.loads(path.read_text()) if path.exists() else {}


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON so that a reader sees either the old file or the whole new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def load_manifest(data_dir: str | Path) -> list[FrameRecord]:
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{data_dir}: no {MANIFEST}; run `ambient ingest` first")
    with path.open() as f:
        return [FrameRecord(**json.loads(line)) for line in f if line.strip()]


def load_splits(data_dir: str | Path, chunk_rows: int = 65_536) -> np.ndarray:
    """Each manifest row's split ("train"/"test") as one numpy array, without a FrameRecord per frame
    (1.8 M records take GBs; this takes 36 MB)."""
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{data_dir}: no {MANIFEST}; run `ambient ingest` first")
    chunks, rows = [], []
    with path.open() as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line)["split"])
            if len(rows) == chunk_rows:
                chunks.append(np.array(rows, dtype="U5"))
                rows = []
    chunks.append(np.array(rows, dtype="U5"))
    return np.concatenate(chunks)


def load_features(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(textures (N, 502), spectrum (N, 32)) in manifest order."""
    data_dir = Path(data_dir)
    return np.load(data_dir / TEXTURES), np.load(data_dir / SPECTRUM)


def write_manifest(data_dir: str | Path, records: list[FrameRecord],
                   textures: np.ndarray, spectrum: np.ndarray) -> None:
    data_dir = Path(data_dir)
    tmp = data_dir / (MANIFEST + ".tmp")
    with tmp.open("w") as f:
        for r in records:
            f.write(json.dumps(asdict(r)) + "\n")
    np.save(data_dir / TEXTURES, textures.astype(np.float32))
    np.save(data_dir / SPECTRUM, spectrum.astype(np.float32))
    os.replace(tmp, data_dir / MANIFEST)   # the manifest appears last: it marks the set complete
