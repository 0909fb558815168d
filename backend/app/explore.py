"""Exploring a run's units, for every account: a page per unit (top images and clips, the pool's
activation histogram and samples from lower quantiles, human verdict, automatic labels, neighbours), the units browser's filters and sorting, and the read-only records the
JSON API returns for runs, layers, units, sound clusters and frames.

A unit's verdict and automatic labels reach only an account whose Visibility (backend/app/campaign.py)
shows that unit: the others get the unit "blind", those fields left out before any filter or page sees them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence
from urllib.parse import quote

import plotly.graph_objects as go
from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer, joinedload

from annotation.aggregate import UnitVerdict
from backend.app.campaign import Visibility, default_campaign
from backend.app.clusters import cluster_title, cluster_url
from backend.app.errors import TaskError
from backend.app.gold import judging
from backend.app.results import RunReport, _verdict, characteristic_flags, unit_answers, unit_settlements
from backend.db.models import Frame, Layer, Run, SoundCluster, SoundClusterMember, Unit, UnitImage, UnitSample, Video
from model.settings import ANNOTATION

if TYPE_CHECKING:
    import numpy as np      # imported where used: the app answers its first page without it (tests/test_layout.py)

SORTS = ("unit", "label", "precision", "auto_precision", "iou", "agreement")


def get_run(db: Session, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None:
        raise TaskError(f"There is no run {run_id}.", 404)
    return run


# --- The units browser

@dataclass(frozen=True)
class UnitSummary:
    """One unit as the browser and the API's unit list show it."""

    id: int
    layer: str
    index: int
    blind: bool                     # its results are hidden from this account: every field below is None
    complete: bool | None           # all its annotators have answered (or an admin settled it)
    answer: str | None              # the annotators' verdict: yes, no, texture; None before it is complete or on a tie
    label: str | None               # the human label: the category, when the unit is a detector
    precision: float | None         # the human verdict's share of top images showing the category
    agreement: float | None
    auto_category: str | None
    auto_precision: float | None
    auto_iou: float | None
    characteristic: bool | None     # the human label (else the automatic one) has a characteristic sound
    top_image_ids: tuple[int, ...]


def unit_summaries(report: RunReport, shown: Visibility) -> list[UnitSummary]:
    """Every unit of the report, in layer and index order, blind where `shown` does not show it."""
    summaries = []
    for row in report.units:
        if not shown.shows(row.unit_id):
            summaries.append(UnitSummary(
                id=row.unit_id, layer=row.layer, index=row.index, blind=True, complete=None, answer=None,
                label=None, precision=None, agreement=None, auto_category=None, auto_precision=None, auto_iou=None,
                characteristic=None, top_image_ids=row.top_image_ids))
            continue
        verdict = row.verdict
        label = verdict.category if verdict is not None and verdict.is_detector else None
        summaries.append(UnitSummary(
            id=row.unit_id, layer=row.layer, index=row.index, blind=False, complete=verdict is not None,
            answer=verdict.answer if verdict else None, label=label,
            precision=verdict.precision if verdict else None, agreement=verdict.agreement if verdict else None,
            auto_category=row.auto_category, auto_precision=row.auto_precision, auto_iou=row.auto_iou,
            characteristic=report.characteristic.get(label or row.auto_category or "", False),
            top_image_ids=row.top_image_ids))
    return summaries


@dataclass(frozen=True)
class UnitFilters:
    """The units browser's query: every filter left empty keeps all units."""

    label: str = ""                     # part of the human or the automatic label, any case
    min_precision: float | None = None  # of the human verdict
    min_iou: float | None = None        # of the automatic label
    min_agreement: float | None = None
    characteristic: bool | None = None  # True: only characteristic-sound labels; False: only the others
    layer: str = ""
    sort: str = "unit"                  # one of SORTS; labels sort A-Z, numbers highest first
    detectors_only: bool = False

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise TaskError(f"Sort by one of {', '.join(SORTS)}, not {self.sort[:30]!r}.")


def _at_least(value: float | None, bound: float | None) -> bool:
    return bound is None or (value is not None and value >= bound)


def browse_units(units: Sequence[UnitSummary], filters: UnitFilters) -> list[UnitSummary]:
    """The units that pass `filters`, sorted as they ask (units without the sorted value last)."""
    needle = filters.label.strip().lower()
    kept = [u for u in units
            if (not needle or needle in (u.label or "").lower() or needle in (u.auto_category or "").lower())
            and _at_least(u.precision, filters.min_precision) and _at_least(u.auto_iou, filters.min_iou)
            and _at_least(u.agreement, filters.min_agreement)
            and (filters.characteristic is None or u.characteristic == filters.characteristic)
            and (not filters.layer or u.layer == filters.layer) and (not filters.detectors_only or u.label)]
    if filters.sort == "unit":
        return sorted(kept, key=lambda u: (u.layer, u.index))
    if filters.sort == "label":
        return sorted(kept, key=lambda u: ((u.label or u.auto_category) is None, u.label or u.auto_category or "",
                                           u.layer, u.index))
    value = {"precision": lambda u: u.precision, "auto_precision": lambda u: u.auto_precision,
             "iou": lambda u: u.auto_iou, "agreement": lambda u: u.agreement}[filters.sort]
    return sorted(kept, key=lambda u: (value(u) is None, -(value(u) or 0.0), u.layer, u.index))


# --- One unit

@dataclass(frozen=True)
class AutomaticLabels:
    """A unit's automatic labels: against the world's truth (the paper's precision) and Network Dissection's."""

    category: str | None
    precision: float | None
    iou: float | None
    netdissect_category: str | None
    netdissect_iou: float | None


@dataclass(frozen=True)
class UnitPage:
    run: Run
    layer: Layer
    unit: Unit                         # pages read its id, index and histogram; its labels are in `automatic`
    images: list[UnitImage]            # best first, their frames loaded (the JPEG bytes are not)
    samples: dict[float, list[UnitSample]]   # images near lower quantiles, highest quantile first (no JPEG bytes)
    blind: bool                        # its results are hidden from this account: verdict and automatic are None
    verdict: UnitVerdict | None        # None until the unit has all its annotators (or a settlement)
    automatic: AutomaticLabels | None
    characteristic: dict[str, bool]
    previous: int | None               # the neighbouring units' indices in the layer
    next: int | None
    # ``ambient ablate --each-unit``: the sound labels that lose most with this unit alone off, [{"index", "name",
    # "probability_drop", "drop" (accuracy), "url", "frame_ids": closest test frames, to hear}], largest loss first
    helps_predict: list[dict] = field(default_factory=list)
    visualization_url: str | None = None     # ``ambient visualize``: an image optimised to excite the unit
    # The run's units whose pool maxima correlate most with this one's: [{"layer", "unit", "r", "url", "label"
    # (automatic label, None where this account may not see it yet)}], largest r first
    similar: list[dict] = field(default_factory=list)


def unit_page(db: Session, run_id: int, layer_name: str, index: int, shown: Visibility) -> UnitPage:
    """One unit, blind (no verdict, no automatic labels) where `shown` does not show it."""
    run = get_run(db, run_id)
    layer = db.scalar(select(Layer).where(Layer.run_id == run_id, Layer.name == layer_name))
    if layer is None:
        raise TaskError(f"Run {run.name} has no layer {layer_name[:100]!r}.", 404)
    unit = db.scalar(select(Unit).options(joinedload(Unit.auto_category), joinedload(Unit.auto_netdissect_category))
                     .where(Unit.layer_id == layer.id, Unit.index == index))
    if unit is None:
        raise TaskError(f"Layer {layer.name} of run {run.name} has no unit {index}.", 404)
    # Pages link the pictures (/images/{id}): loading the JPEG blobs here would waste the time.
    images = list(db.scalars(select(UnitImage).options(defer(UnitImage.masked_jpeg), joinedload(UnitImage.frame))
                             .where(UnitImage.unit_id == unit.id).order_by(UnitImage.rank)))
    samples: dict[float, list[UnitSample]] = {}
    for sample in db.scalars(select(UnitSample).options(defer(UnitSample.masked_jpeg), joinedload(UnitSample.frame))
                             .where(UnitSample.unit_id == unit.id)
                             .order_by(UnitSample.quantile.desc(), UnitSample.rank)):
        samples.setdefault(sample.quantile, []).append(sample)
    blind = not shown.shows(unit.id)
    verdict = automatic = None
    if not blind:
        # The verdict of the run's default campaign (its results page's).
        campaign = default_campaign(db, run.id)
        campaign_id = campaign.id if campaign is not None else None
        answers, settlements = unit_answers(db, [unit.id], campaign_id), unit_settlements(db, [unit.id], campaign_id)
        verdict = _verdict(unit.id, answers.get(unit.id, ()), settlements.get(unit.id), len(images),
                           judging(db, campaign, ANNOTATION.annotators_per_unit))
        automatic = AutomaticLabels(
            unit.auto_category.name if unit.auto_category else None, unit.auto_precision, unit.auto_iou,
            unit.auto_netdissect_category.name if unit.auto_netdissect_category else None, unit.auto_netdissect_iou)
    previous = db.scalar(select(func.max(Unit.index)).where(Unit.layer_id == layer.id, Unit.index < index))
    following = db.scalar(select(func.min(Unit.index)).where(Unit.layer_id == layer.id, Unit.index > index))
    visualized = db.scalar(select(Unit.visualization_png.is_not(None)).where(Unit.id == unit.id))
    return UnitPage(run, layer, unit, images, samples, blind, verdict, automatic, characteristic_flags(db),
                    previous, following, _helps_predict(db, run_id, unit),
                    f"/units/{unit.id}/visualization.png" if visualized else None, _similar(db, run, unit, shown))


def _similar(db: Session, run: Run, unit: Unit, shown: Visibility) -> list[dict]:
    """The unit's similar units with their automatic labels (hidden where ``shown`` hides that unit's results)."""
    if not unit.similar:
        return []
    layers = {layer.name: layer.id for layer in db.scalars(select(Layer).where(Layer.run_id == run.id))}
    rows = {(row.layer_id, row.index): row for row in db.scalars(
        select(Unit).options(joinedload(Unit.auto_category))
        .where(Unit.layer_id.in_(layers.values()), Unit.index.in_([link["unit"] for link in unit.similar])))}
    similar = []
    for link in unit.similar:
        other = rows.get((layers.get(link["layer"]), link["unit"]))
        label = other.auto_category.name if other is not None and other.auto_category and shown.shows(other.id) \
            else None
        similar.append({"layer": link["layer"], "unit": link["unit"], "r": link["r"], "label": label,
                        "url": f"/runs/{run.id}/units/{quote(link['layer'], safe='')}/{link['unit']}"})
    return similar


def _helps_predict(db: Session, run_id: int, unit: Unit, clips: int = 3) -> list[dict]:
    """The unit's "sounds it helps predict" with each cluster's name and its closest test frames' clips."""
    if not unit.helps_predict:
        return []
    clusters = {c.index: c for c in db.scalars(select(SoundCluster).where(SoundCluster.run_id == run_id))}
    return [{"index": link["index"], "drop": link.get("drop"), "probability_drop": link.get("probability_drop"),
             "url": cluster_url(run_id, link["index"]),
             "name": clusters[link["index"]].name if link["index"] in clusters else f"Label {link['index'] + 1}",
             "title": _title(clusters[link["index"]]) if link["index"] in clusters else f"Label {link['index'] + 1}",
             "frame_ids": list(clusters[link["index"]].closest_frame_ids[:clips]) if link["index"] in clusters else []}
            for link in unit.helps_predict]


def run_comparisons(db: Session, run_id: int, shown: Visibility) -> tuple[Run, list[dict]]:
    """The run's comparisons with other runs (``ambient compare``, published), by file name. Dissection labels are
    automatic labels: shown only to accounts that see every unit's results (annotators are blind until then)."""
    run = get_run(db, run_id)
    comparisons = []
    for name, result in sorted((run.comparisons or {}).items()):
        units = result["units"] if shown.everything else [
            {**unit, "label_a": None, "label_b": None} for unit in result["units"]]
        comparisons.append({**result, "name": name, "units": units, "labels_shown": shown.everything})
    return run, comparisons


def histogram_figure(page: UnitPage) -> go.Figure | None:
    """The unit's activation histogram over the pool (log counts), with where its top images and each
    sampled quantile lie; None when the run's units file had none."""
    histogram = page.unit.histogram
    if not histogram:
        return None
    import numpy as np

    edges = np.asarray(histogram["edges"])
    figure = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=histogram["counts"], width=np.diff(edges),
                              marker_color="#0b6bcb", name="images"))
    marks = [(min(i.activation for i in page.images), f"top {len(page.images)}")] if page.images else []
    marks += [(min(s.activation for s in samples), f"{100 * q:g}th pct") for q, samples in page.samples.items()]
    # Each label on a line of its own, highest value on top: the top images' line and the 99th percentile's
    # are often a hair apart, and labels side by side would overlap.
    for row, (value, label) in enumerate(sorted(marks, reverse=True)):
        figure.add_vline(x=value, line_dash="dot", line_color="#e8590c")
        figure.add_annotation(x=value, y=1 - 0.13 * row, yref="paper", xanchor="left", yanchor="bottom",
                              showarrow=False, text=label, font={"size": 11}, bgcolor="rgba(255,255,255,.8)")
    figure.update_layout(height=260, margin={"t": 30, "b": 40, "l": 50, "r": 10}, showlegend=False, bargap=0,
                         xaxis_title="spatial maximum of the unit's map", yaxis_title="images", yaxis_type="log")
    return figure


# --- Records for the JSON API

def page_of(items: list, offset: int, limit: int) -> dict:
    return {"total": len(items), "offset": offset, "limit": limit, "items": items[offset:offset + limit]}


def run_records(db: Session) -> list[dict]:
    layers = dict(db.execute(select(Layer.run_id, func.count()).group_by(Layer.run_id)).all())
    return [{"id": r.id, "name": r.name, "model_kind": r.model_kind, "labels_kind": r.labels_kind,
             "layers": layers.get(r.id, 0), "created_at": r.created_at.isoformat()}
            for r in db.scalars(select(Run).order_by(Run.id))]


def layer_records(db: Session, run_id: int) -> list[dict]:
    get_run(db, run_id)
    return [{"name": layer.name, "num_units": layer.num_units, "input_size": layer.input_size,
             "rf_size": layer.rf_size, "rf_radius": layer.rf_radius}
            for layer in db.scalars(select(Layer).where(Layer.run_id == run_id).order_by(Layer.name))]


def image_record(image: UnitImage) -> dict:
    return {"id": image.id, "rank": image.rank + 1, "activation": image.activation, "frame": image.frame_id,
            "url": f"/images/{image.id}", "clip_url": f"/clips/{image.id}" if image.frame.clip_path else None}


def sample_record(sample: UnitSample) -> dict:
    return {"id": sample.id, "rank": sample.rank + 1, "activation": sample.activation, "frame": sample.frame_id,
            "url": f"/samples/{sample.id}",
            "clip_url": f"/frames/{sample.frame_id}/clip" if sample.frame.clip_path else None}


def unit_record(page: UnitPage) -> dict:
    """One unit: its top images' URLs, its human verdict (once complete) and automatic labels (None when
    blind), its neighbours."""
    unit, v, auto = page.unit, page.verdict, page.automatic
    return {
        "id": unit.id, "run": page.run.id, "layer": page.layer.name, "index": unit.index, "blind": page.blind,
        "images": [image_record(image) for image in page.images],
        "histogram": unit.histogram,
        "samples": [{"quantile": quantile, "images": [sample_record(s) for s in samples]}
                    for quantile, samples in page.samples.items()],
        "verdict": None if v is None else {
            "answer": v.answer, "category": v.category, "is_detector": v.is_detector,
            "precision": round(v.precision, 4), "agreement": None if v.agreement is None else round(v.agreement, 4),
            "annotators": len(v.annotators), "settled": v.settled,
            "characteristic": page.characteristic.get(v.category or "", False),
            "image_contains": list(v.image_contains)},
        "automatic": None if auto is None else {
            "category": auto.category, "precision": auto.precision, "iou": auto.iou,
            "netdissect_category": auto.netdissect_category, "netdissect_iou": auto.netdissect_iou},
        "previous": page.previous, "next": page.next,
        "helps_predict": [{"index": h["index"], "name": h["name"], "title": h["title"], "drop": h["drop"],
                           "probability_drop": h["probability_drop"],
                           "clip_urls": [f"/frames/{f}/clip" for f in h["frame_ids"]]} for h in page.helps_predict],
        "visualization_url": page.visualization_url,
        "similar": [{"layer": s["layer"], "unit": s["unit"], "r": s["r"], "label": s["label"]} for s in page.similar]}


def summary_record(run_id: int, u: UnitSummary) -> dict:
    return {"id": u.id, "layer": u.layer, "index": u.index, "blind": u.blind, "complete": u.complete, "answer": u.answer,
            "label": u.label, "precision": u.precision, "agreement": u.agreement, "auto_category": u.auto_category,
            "auto_precision": u.auto_precision, "auto_iou": u.auto_iou, "characteristic": u.characteristic,
            "url": f"/api/v1/runs/{run_id}/units/{u.layer}/{u.index}",
            "top_image_urls": [f"/images/{i}" for i in u.top_image_ids]}


def _vector(data: bytes | None) -> list[float] | None:
    import numpy as np

    return None if data is None else np.frombuffer(data, np.float32).astype(float).tolist()


def _title(cluster: SoundCluster) -> str:
    return cluster_title(cluster.name, cluster.given_name, cluster.description)


def cluster_records(db: Session, run_id: int) -> list[dict]:
    """The run's sound clusters (or code bits): size, centroid texture (502 statistics), true sources."""
    get_run(db, run_id)
    return [{"index": c.index, "name": c.name, "title": _title(c), "description": c.description,
             "given_name": c.given_name, "size": c.size, "share": c.share, "texture": _vector(c.texture),
             "contrast": _vector(c.contrast), "sources": dict(c.sources),
             "closest_frame_ids": list(c.closest_frame_ids), "depends_on": list(c.depends_on or []),
             "members_url": f"/api/v1/runs/{run_id}/clusters/{c.index}/members"}
            for c in db.scalars(select(SoundCluster).where(SoundCluster.run_id == run_id).order_by(SoundCluster.index))]


def cluster_members(db: Session, run_id: int, index: int, offset: int, limit: int) -> dict:
    """A page of the frames in one cluster (or with one code bit on), by frame id."""
    cluster_id = db.scalar(select(SoundCluster.id).where(SoundCluster.run_id == run_id, SoundCluster.index == index))
    if cluster_id is None:
        raise TaskError(f"Run {get_run(db, run_id).name} has no sound cluster {index}.", 404)
    members = select(SoundClusterMember.frame_id).where(SoundClusterMember.cluster_id == cluster_id)
    total = db.scalar(select(func.count()).select_from(members.subquery()))
    frames = db.scalars(select(Frame).where(Frame.id.in_(members)).order_by(Frame.id).offset(offset).limit(limit))
    return {"total": total, "offset": offset, "limit": limit, "items": [frame_summary(f) for f in frames]}


def frame_summary(frame: Frame) -> dict:
    return {"id": frame.id, "url": f"/api/v1/frames/{frame.id}", "image_url": f"/frames/{frame.id}/image",
            "clip_url": f"/frames/{frame.id}/clip" if frame.clip_path else None}


def frame_record(db: Session, frame_id: int) -> dict:
    """A frame: where it comes from, its split, its image and clip, and its clip's sound texture."""
    row = db.execute(select(Frame, Video.key).outerjoin(Video, Frame.video_id == Video.id)
                     .where(Frame.id == frame_id)).one_or_none()
    if row is None:
        raise TaskError(f"There is no frame {frame_id}.", 404)
    frame, video = row
    return {**frame_summary(frame), "dataset": frame.dataset_id, "video": video, "frame_index": frame.frame_index,
            "time": frame.time, "split": frame.split, "silent": frame.silent, "texture": _vector(frame.texture)}
