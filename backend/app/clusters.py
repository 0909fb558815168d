"""What the sound labels mean (paper Fig. 2): each cluster's (or code bit's) texture, closest frames and,
for the demo world, the true sound sources; Plotly figures of textures and cochleagram images."""
from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from PIL import Image

from model import audio, dataset, media
from model.labels import labels_path
from model.settings import TEXTURE

BROWSABLE_KINDS = ("cluster", "binary")
CLOSEST_FRAMES = 8
# Colours of the cochleagram image, low to high (close to matplotlib's "magma").
_COLOURS = np.array([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=float)


@dataclass
class SoundGroup:
    """One cluster, or one code bit's frames with the bit on."""

    index: int
    name: str
    size: int                        # frames (all splits) in the group
    share: float                     # of all frames
    texture: np.ndarray              # (502,) centroid or mean texture, unweighted texture space
    contrast: np.ndarray | None      # binary: the mean texture of the frames with the bit off
    closest_rows: list[int]          # test frames nearest the centroid (strongest projection), one per video
    sources: dict[str, int] = field(default_factory=dict)   # demo world: frames hearing each true source


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
        groups.append(SoundGroup(index=index, name=names[index], size=int(member.sum()),
                                 share=float(member.mean()), texture=textures_of[index], contrast=contrasts[index],
                                 closest_rows=one_per_video(orders[index], records, closest),
                                 sources=dict(sources.most_common())))
    return groups


@dataclass
class DatasetSounds:
    kind: str
    records: list[dataset.FrameRecord]
    textures: np.ndarray
    groups: list[SoundGroup]
    assignment: np.ndarray    # cluster: (N,) group of each frame; binary: (N, bits) codes


def _truth_reader(data_dir: Path) -> Callable[[dataset.FrameRecord], list[str]] | None:
    """What is heard in a frame's clip, when the dataset was ingested from the demo world."""
    from model.world.truth import find_world_dir, frame_truth
    try:
        world_dir = find_world_dir(json.loads((data_dir / dataset.REPORT).read_text()).get("videos_dir"))
    except (OSError, ValueError, TypeError, LookupError):
        return None
    return lambda r: frame_truth(world_dir, r.video, r.time).audible


@lru_cache(maxsize=8)
def _load(data_dir: Path, kind: str, _stamp: float) -> DatasetSounds:
    with np.load(labels_path(data_dir, kind)) as npz:
        labels = {key: npz[key] for key in npz.files}
    records = dataset.load_manifest(data_dir)
    textures = np.load(data_dir / dataset.TEXTURES).astype(np.float64)
    groups = sound_groups(labels, textures, records, _truth_reader(data_dir))
    assignment = labels["labels"] if kind == "cluster" else labels["codes"]
    return DatasetSounds(kind, records, textures, groups, assignment)


def dataset_sounds(data_dir: str | Path, kind: str) -> DatasetSounds:
    """The groups of DATA_DIR's ``kind`` labels, cached per process until the labels file changes."""
    data_dir = Path(data_dir)
    path = labels_path(data_dir, kind)
    if kind not in BROWSABLE_KINDS:
        raise FileNotFoundError(f"{kind!r} labels have no texture groups; browse cluster or binary labels")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `ambient labels {data_dir} --kind {kind}`")
    return _load(data_dir, kind, path.stat().st_mtime)


# --- Figures

def texture_figure(texture: np.ndarray, name: str, contrast: np.ndarray | None = None,
                   contrast_name: str = "") -> go.Figure:
    """Per-channel mean and standard deviation (by centre frequency), modulation power and correlations."""
    groups = audio.TEXTURE_GROUPS
    hz = audio.cochlear_center_frequencies()
    mod_hz = np.geomspace(TEXTURE.mod_low_hz, TEXTURE.mod_high_hz, TEXTURE.n_modulation)
    figure = make_subplots(rows=1, cols=3, column_widths=[0.4, 0.3, 0.3], horizontal_spacing=0.09,
                           subplot_titles=("Envelope mean and std. dev.", "Modulation power", "Correlations"))
    for values, label, dash in ((texture, name, None), (contrast, contrast_name, "dot")):
        if values is None:
            continue
        figure.add_trace(go.Scatter(x=hz, y=values[groups["mu"]], name=f"{label}: mean", mode="lines+markers",
                                    line={"color": "#0b6bcb", "dash": dash}), 1, 1)
        figure.add_trace(go.Scatter(x=hz, y=values[groups["sigma"]], name=f"{label}: std. dev.",
                                    mode="lines+markers", line={"color": "#e8590c", "dash": dash}), 1, 1)
    modulation = texture[groups["mod"]].reshape(audio.N_CHANNELS, TEXTURE.n_modulation)
    figure.add_trace(go.Heatmap(z=modulation, x=[f"{f:.1f}" for f in mod_hz], y=[f"{f:.0f}" for f in hz],
                                colorscale="Magma", showscale=False, name="modulation"), 1, 2)
    rho = texture[groups["rho"]]
    rows, start = [], 0
    for offset in TEXTURE.correlation_offsets:       # diagonals of the channel correlation matrix
        length = audio.N_CHANNELS - offset
        rows.append(np.concatenate([rho[start:start + length], np.full(offset, np.nan)]))
        start += length
    figure.add_trace(go.Heatmap(z=np.array(rows), x=[f"{f:.0f}" for f in hz],
                                y=[f"+{o}" for o in TEXTURE.correlation_offsets], colorscale="RdBu", zmid=0,
                                showscale=False, name="correlation"), 1, 3)
    figure.update_xaxes(type="log", title_text="centre frequency (Hz)", row=1, col=1)
    figure.update_xaxes(title_text="modulation (Hz)", row=1, col=2)
    figure.update_yaxes(title_text="channel (Hz)", row=1, col=2)
    figure.update_xaxes(title_text="channel (Hz)", row=1, col=3)
    figure.update_yaxes(title_text="neighbour", row=1, col=3)
    figure.update_layout(height=300, margin={"t": 30, "b": 40, "l": 50, "r": 10},
                         legend={"orientation": "h", "y": -0.3}, showlegend=True)
    return figure


def cochleagram_image(envelopes: np.ndarray, width: int = 600, channel_height: int = 4) -> Image.Image:
    """(32, T) envelopes -> an RGB image, frequency up, time across."""
    scaled = envelopes / max(float(envelopes.max()), 1e-12)
    levels = np.clip(scaled[::-1], 0, 1) * (len(_COLOURS) - 1)    # row 0 is the lowest channel: flip it up
    low = np.floor(levels).astype(int).clip(0, len(_COLOURS) - 2)
    mix = (levels - low)[..., None]
    rgb = (_COLOURS[low] * (1 - mix) + _COLOURS[low + 1] * mix).astype(np.uint8)
    return Image.fromarray(rgb).resize((width, envelopes.shape[0] * channel_height), Image.Resampling.BILINEAR)


@lru_cache(maxsize=256)
def cochleagram_png(clip_path: Path) -> bytes:
    """The cochleagram of a clip file as PNG bytes (cached: clips do not change)."""
    waveform, rate = media.read_audio(clip_path)
    out = io.BytesIO()
    cochleagram_image(audio.cochleagram(waveform, rate)).save(out, "PNG")
    return out.getvalue()
