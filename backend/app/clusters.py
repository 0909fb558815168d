"""The sound-cluster browser's service (paper Fig. 2): a run's published sound clusters (or code bits)
from the database, and Plotly figures of textures and cochleagram images."""
from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import Frame, Run, SoundCluster, SoundClusterMember
from model.settings import TEXTURE

# numpy and Pillow are imported where they are used: the app answers its first page without them
# (tests/test_layout.py).
if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# Colours of the cochleagram image, low to high (close to matplotlib's "magma").
_COLOURS = ((0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191))


CLUSTERS_PER_PAGE = 5


def cluster_url(run_id: int, index: int) -> str:
    """The cluster browser's page showing the cluster of ``index`` (clusters are listed by index)."""
    return f"/runs/{run_id}/clusters?offset={index - index % CLUSTERS_PER_PAGE}#group-{index}"


def cluster_title(name: str, given_name: str | None, description: str | None) -> str:
    """A sound cluster as pages and exports call it: its label and what it is, the name an admin gave it
    else what the data said at publish ("Cluster 3: traffic 62%, crowd 20%")."""
    what = given_name or description
    return f"{name}: {what}" if what else name


class NotFound(LookupError):
    """A run, group or frame the browser cannot show; the message says which."""


@dataclass
class PublishedGroup:
    """A SoundCluster row with its textures as arrays."""

    index: int
    name: str
    size: int
    share: float
    texture: np.ndarray
    contrast: np.ndarray | None
    closest_frame_ids: list[int]
    sources: dict[str, int]
    depends_on: list[dict]      # ``ambient ablate --each-unit``: [{"layer", "unit", "drop"}], largest drop first
    title: str                  # `cluster_title`
    given_name: str | None
    visualization_url: str | None = None    # ``ambient visualize --clusters``: what the network thinks it looks like

    @classmethod
    def of(cls, row: SoundCluster, visualized: bool = False) -> "PublishedGroup":
        return cls(row.index, row.name, row.size, row.share, _vector(row.texture),
                   None if row.contrast is None else _vector(row.contrast), list(row.closest_frame_ids),
                   dict(row.sources), list(row.depends_on or []),
                   cluster_title(row.name, row.given_name, row.description), row.given_name,
                   f"/clusters/{row.id}/visualization.png" if visualized else None)


def _vector(data: bytes) -> np.ndarray:
    import numpy as np

    return np.frombuffer(data, np.float32).astype(np.float64)


def runs_with_clusters(db: Session) -> list[Run]:
    published = select(SoundCluster.run_id).distinct()
    return list(db.scalars(select(Run).where(Run.id.in_(published)).order_by(Run.id)))


def run_groups(db: Session, run_id: int) -> tuple[Run, list[PublishedGroup]]:
    run = db.get(Run, run_id)
    if run is None:
        raise NotFound(f"There is no run {run_id}.")
    rows = db.scalars(select(SoundCluster).where(SoundCluster.run_id == run_id).order_by(SoundCluster.index)).all()
    if not rows:
        raise NotFound(f"Run {run.name} has no published sound clusters: its labels are not cluster or binary "
                       f"codes, or it was published before `ambient labels` ran (run `ambient publish` again).")
    visualized = set(db.scalars(select(SoundCluster.id).where(SoundCluster.run_id == run_id,
                                                              SoundCluster.visualization_png.is_not(None))))
    return run, [PublishedGroup.of(row, row.id in visualized) for row in rows]


def name_cluster(db: Session, run_id: int, index: int, name: str) -> SoundCluster:
    """Give the run's cluster `index` an admin's name (blank: none, what the data says shows again); committed."""
    cluster = db.scalar(select(SoundCluster).where(SoundCluster.run_id == run_id, SoundCluster.index == index))
    if cluster is None:
        raise NotFound(f"Run {run_id} has no sound cluster {index}.")
    cluster.given_name = " ".join(name.split())[:100] or None
    db.commit()
    return cluster


def frame_groups(db: Session, run_id: int, frame_id: int) -> tuple[Run, Frame, list[PublishedGroup]]:
    """A frame of the run's labelled dataset with the groups it belongs to (one cluster, or its bits that are on)."""
    run, _ = run_groups(db, run_id)
    frame = db.get(Frame, frame_id)
    member_of = select(SoundClusterMember.cluster_id).where(SoundClusterMember.frame_id == frame_id)
    rows = db.scalars(select(SoundCluster).where(SoundCluster.run_id == run_id, SoundCluster.id.in_(member_of))
                      .order_by(SoundCluster.index)).all()
    labelled = db.scalar(select(Frame.dataset_id).join(SoundClusterMember, SoundClusterMember.frame_id == Frame.id)
                         .join(SoundCluster, SoundCluster.id == SoundClusterMember.cluster_id)
                         .where(SoundCluster.run_id == run_id).limit(1))
    if frame is None or frame.dataset_id != labelled:
        raise NotFound(f"Run {run.name}'s labelled dataset has no frame {frame_id}.")
    return run, frame, [PublishedGroup.of(row) for row in rows]


def frame_texture(frame: Frame) -> np.ndarray | None:
    return None if frame.texture is None else _vector(frame.texture)


# --- Figures

def texture_figure(texture: np.ndarray, name: str, contrast: np.ndarray | None = None,
                   contrast_name: str = "") -> go.Figure:
    """Per-channel mean and standard deviation (by centre frequency), modulation power and correlations."""
    import numpy as np
    from plotly.subplots import make_subplots     # 0.05 s to import: loaded with the first figure, not at start-up

    from model.sound import texture as audio      # scipy: loaded with the first figure, not at start-up

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
    import numpy as np
    from PIL import Image

    colours = np.array(_COLOURS, dtype=float)
    scaled = envelopes / max(float(envelopes.max()), 1e-12)
    levels = np.clip(scaled[::-1], 0, 1) * (len(colours) - 1)    # row 0 is the lowest channel: flip it up
    low = np.floor(levels).astype(int).clip(0, len(colours) - 2)
    mix = (levels - low)[..., None]
    rgb = (colours[low] * (1 - mix) + colours[low + 1] * mix).astype(np.uint8)
    return Image.fromarray(rgb).resize((width, envelopes.shape[0] * channel_height), Image.Resampling.BILINEAR)


@lru_cache(maxsize=256)
def cochleagram_png(clip_path: Path) -> bytes:
    """The cochleagram of a clip file as PNG bytes (cached: clips do not change)."""
    from model.data import media                  # PyAV: loaded with the first cochleagram, not at start-up
    from model.sound import texture as audio      # scipy: loaded with the first cochleagram, not at start-up

    waveform, rate = media.read_audio(clip_path)
    out = io.BytesIO()
    cochleagram_image(audio.cochleagram(waveform, rate)).save(out, "PNG")
    return out.getvalue()
