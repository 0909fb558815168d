"""What the sound labels mean (paper Fig. 2): each cluster's (or code bit's) members, texture, closest
test frames and, for the demo world, the true sound sources heard in it.

Entry point: ``sound_groups`` (arrays in, groups out); ``dataset_sound_groups`` reads a DATA_DIR's files.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.data import dataset

BROWSABLE_KINDS = ("cluster", "binary")
CLOSEST_FRAMES = 8


@dataclass
class SoundGroup:
    """One cluster, or one code bit's frames with the bit on."""

    index: int
    name: str
    members: np.ndarray              # (n,) manifest rows in the group, all splits
    share: float                     # of all frames
    texture: np.ndarray              # (502,) centroid or mean texture, unweighted texture space
    contrast: np.ndarray | None      # binary: the mean texture of the frames with the bit off
    closest_rows: list[int]          # test frames nearest the centroid (strongest projection), one per video
    sources: dict[str, int] = field(default_factory=dict)   # demo world: frames hearing each true source

    @property
    def size(self) -> int:
        return len(self.members)


def one_per_video(rows: Sequence[int], records: Sequence[dataset.FrameRecord], count: int) -> list[int]:
    """The first ``count`` rows (in order) whose videos have not been taken yet."""
    seen, kept = set(), []
    for row in rows:
        if records[row].video_id not in seen:
            seen.add(records[row].video_id)
            kept.append(int(row))
            if len(kept) == count:
                break
    return kept


def sound_groups(labels: dict, textures: np.ndarray, records: Sequence[dataset.FrameRecord],
                 heard: Callable[[dataset.FrameRecord], list[str]] | None = None,
                 closest: int = CLOSEST_FRAMES) -> list[SoundGroup]:
    """The groups of a ``labels/<kind>.npz`` (as a dict of arrays) over a dataset's textures and manifest."""
    kind = str(labels["kind"])
    weights = labels["weights"]
    test = np.array([r.split == "test" for r in records])
    if kind == "cluster":
        members = [labels["labels"] == c for c in range(int(labels["k"]))]
        textures_of = [labels["centroids"][c] / weights for c in range(len(members))]
        contrasts = [None] * len(members)
        # Nearest first: each frame's distance is to its own cluster's centroid.
        orders = [np.flatnonzero(m & test)[np.argsort(labels["distances"][m & test], kind="stable")] for m in members]
        names = [f"Cluster {c + 1}" for c in range(len(members))]
    elif kind == "binary":
        codes = labels["codes"].astype(bool)
        members = [codes[:, b] for b in range(codes.shape[1])]
        textures_of = [textures[m].mean(0) if m.any() else np.zeros(textures.shape[1]) for m in members]
        contrasts = [textures[~m].mean(0) if (~m).any() else None for m in members]
        projections = (textures * weights - labels["mean"]) @ labels["components"].T
        orders = [np.flatnonzero(m & test)[np.argsort(-projections[m & test, b], kind="stable")]
                  for b, m in enumerate(members)]
        names = [f"Bit {b + 1}" for b in range(len(members))]
    else:
        raise ValueError(f"{kind!r} labels have no texture groups to browse; use cluster or binary labels")
    heard_by_row = [heard(r) for r in records] if heard else None
    groups = []
    for index, member in enumerate(members):
        sources = Counter()
        if heard_by_row is not None:
            for row in np.flatnonzero(member):
                sources.update(heard_by_row[row] or ["(silence)"])
        groups.append(SoundGroup(index=index, name=names[index], members=np.flatnonzero(member),
                                 share=float(member.mean()), texture=textures_of[index], contrast=contrasts[index],
                                 closest_rows=one_per_video(orders[index], records, closest),
                                 sources=dict(sources.most_common())))
    return groups


def heard_reader(data_dir: Path) -> Callable[[dataset.FrameRecord], list[str]] | None:
    """What is heard in a frame's clip, when the dataset was ingested from the demo world."""
    from model.world.truth import find_world_dir, frame_truth
    try:
        world_dir = find_world_dir(dataset.read_report(data_dir).get("videos_dir"))
    except (OSError, ValueError, TypeError, LookupError):
        return None
    return lambda r: frame_truth(world_dir, r.video, r.time).audible


def dataset_sound_groups(data_dir: str | Path, kind: str) -> list[SoundGroup]:
    """The groups of DATA_DIR's ``kind`` labels; FileNotFoundError (naming the command to run) when absent."""
    data_dir = Path(data_dir)
    if kind not in BROWSABLE_KINDS:
        raise ValueError(f"{kind!r} labels have no texture groups; browse cluster or binary labels")
    path = dataset.labels_file(data_dir, kind)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `ambient labels {data_dir} --kind {kind}`")
    with np.load(path) as npz:
        labels = {key: npz[key] for key in npz.files}
    textures, _spectrum = dataset.load_features(data_dir)
    return sound_groups(labels, textures.astype(np.float64), dataset.load_manifest(data_dir), heard_reader(data_dir))
