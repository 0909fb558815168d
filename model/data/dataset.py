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
                                       "warnings": [{"path", "warning"}]} (see report_table)
    labels/<kind>.npz                 written by ``ambient labels`` (model/sound/labels.py)
    shards/                           the frames as WebDataset tar shards for streaming training (model/data/shards.py)

A video directory is complete only when ``video.json`` exists: it is written last,
atomically, so a killed ingest leaves nothing half-finished that looks done.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import numpy as np      # imported where used: the web app reads paths and reports here without it

MANIFEST = "manifest.jsonl"
TEXTURES = "textures.npy"
SPECTRUM = "spectrum.npy"
REPORT = "ingest_report.json"
LABELS_DIR = "labels"
SHARDS_DIR = "shards"
# The kinds of labels/<kind>.npz (model/sound/labels.py makes them; frames, training and the job forms read them).
LABEL_KINDS = ("cluster", "binary", "spectrum", "scene", "texton")


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
    """Where ``ambient labels --kind KIND`` writes (model/sound/labels.py)."""
    return Path(data_dir) / LABELS_DIR / f"{kind}.npz"


def shards_dir(data_dir: str | Path) -> Path:
    """Where ``ambient shards`` writes the frames as tar shards (model/data/shards.py)."""
    return Path(data_dir) / SHARDS_DIR


def read_report(data_dir: str | Path) -> dict:
    """DATA_DIR/ingest_report.json, or {} when ingest wrote none (a dataset assembled by hand)."""
    path = Path(data_dir) / REPORT
    return json.loads(path.read_text()) if path.exists() else {}


def reason_kind(text: str) -> str:
    """What a skip reason or warning says without its particulars (numbers, error details, the
    clauses after its first ";"), so that videos skipped for the same cause count together."""
    text = re.sub(r"\s*\([^)]*[\d:][^)]*\)", "", text.split(";")[0])   # "(0.50 s)", "(InvalidDataError: ...)"
    return re.sub(r"\d+(\.\d+)?", "N", text)


def report_table(report: dict | object) -> list[tuple[str, str, int]]:
    """(kind "skipped" or "warning", reason, videos) rows, most frequent first: the end of an ingest
    (``report``: an ``IngestReport`` or its dict, as read_report gives it)."""
    report = report if isinstance(report, dict) else asdict(report)
    counts = Counter([("skipped", reason_kind(s["reason"])) for s in report["skipped"]]
                     + [("warning", reason_kind(w["warning"])) for w in report.get("warnings", [])])
    return [(kind, reason, count) for (kind, reason), count in
            sorted(counts.items(), key=lambda item: (item[0][0], -item[1], item[0][1]))]


def create_new(path: Path) -> BinaryIO:
    """A new file at `path`, opened for writing: refused (FileExistsError) when anything is there already,
    a link included, so nothing is ever written through one."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666), "wb")


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through, so that a reader sees either the old file or the whole new
    one: a temporary file of a fresh random name in the same folder, created exclusively and never
    through a link (O_EXCL | O_NOFOLLOW: a link planted at a predictable name would have had it write
    wherever the link points), then renamed over `path` (which replaces a link there, never follows
    it). Every atomic writer of the pipeline writes through this; the temporary file goes on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    file = create_new(tmp)
    try:
        with file:
            yield file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON so that a reader sees either the old file or the whole new one."""
    with atomic_file(path) as file:
        file.write(json.dumps(obj, indent=1).encode())


def link_outside(folder: str | Path, roots: list[Path]) -> tuple[Path, str] | None:
    """The first link under `folder` that may lead outside every one of `roots` (resolved folders), and
    what it is ("a link to TARGET, outside the data roots", or "a hard link with N names"); None when
    every link stays inside them. Linked folders inside the roots are looked through too (each folder
    once, so a loop of links ends). A file with several names (a hard link, or a link to one) counts as
    leaving: where its other names lie cannot be known, and the pipeline never makes one."""
    todo, seen = [Path(folder).resolve()], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        with os.scandir(current) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_symlink():
                    target = path.resolve()
                    if not any(target.is_relative_to(root) for root in roots):
                        return path, f"a link to {target}, outside the data roots"
                    if entry.is_dir():
                        todo.append(target)
                    elif entry.is_file() and target.stat().st_nlink > 1:
                        return path, f"a link to {target}, a hard link with {target.stat().st_nlink} names"
                elif entry.is_dir(follow_symlinks=False):
                    todo.append(path)
                elif entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_nlink > 1:
                    return path, f"a hard link with {entry.stat(follow_symlinks=False).st_nlink} names"
    return None


def inside_dataset(relative: str) -> bool:
    """Whether a manifest's path (an image or clip, relative to DATA_DIR) names a place inside DATA_DIR:
    relative, with no ".." (links inside are for readers that resolve them to judge)."""
    return not relative.startswith("/") and ".." not in relative.split("/")


def load_manifest(data_dir: str | Path) -> list[FrameRecord]:
    """Every frame of DATA_DIR's manifest; ValueError naming the line whose image or clip path leaves DATA_DIR."""
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{data_dir}: no {MANIFEST}; run `ambient ingest` first")
    with path.open() as f:
        records = [FrameRecord(**json.loads(line)) for line in f if line.strip()]
    for number, record in enumerate(records, 1):
        if not (inside_dataset(record.image) and inside_dataset(record.clip)):
            raise ValueError(f"{path}: frame {number}'s image {record.image!r} or clip {record.clip!r} leaves "
                             f"the dataset folder {data_dir}")
    return records


def load_splits(data_dir: str | Path, chunk_rows: int = 65_536) -> np.ndarray:
    """Each manifest row's split ("train"/"test") as one numpy array, without a FrameRecord per frame
    (1.8 M records take GBs; this takes 36 MB)."""
    import numpy as np

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
    import numpy as np

    data_dir = Path(data_dir)
    return np.load(data_dir / TEXTURES), np.load(data_dir / SPECTRUM)


def write_manifest(data_dir: str | Path, records: list[FrameRecord],
                   textures: np.ndarray, spectrum: np.ndarray) -> None:
    import numpy as np

    data_dir = Path(data_dir)
    for name, array in ((TEXTURES, textures), (SPECTRUM, spectrum)):
        with atomic_file(data_dir / name) as file:
            np.save(file, array.astype(np.float32))
    with atomic_file(data_dir / MANIFEST) as file:    # the manifest appears last: it marks the set complete
        file.write("".join(json.dumps(asdict(r)) + "\n" for r in records).encode())
