"""Exploring runs, for every account: the runs index, each run's units browser, a page per unit (and its
samples' JPEGs), and the read-only JSON API (/api/v1) over runs, layers, units, sound clusters and frames, paginated."""
from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.campaign import Visibility, visibility
from backend.app.deps import (BlankIsNone, Share, admin_user, current_user, figure_html, get_db, get_settings, pages_of,
                              render)
from backend.app.errors import TaskError
from backend.app.explore import (SORTS, UnitFilters, browse_units, cluster_members, cluster_records, frame_record,
                                 get_run, histogram_figure, layer_records, page_of, run_comparisons, run_records,
                                 summary_record, unit_page, unit_record, unit_summaries)
from backend.app.results import default_report
from backend.app.routes.images import jpeg_response
from backend.config import Settings
from backend.db.models import Annotator, Layer, UnitSample

pages = APIRouter(include_in_schema=False)
media = APIRouter(tags=["media"], dependencies=[Depends(current_user)])
api = APIRouter(prefix="/api/v1", tags=["explore"], dependencies=[Depends(current_user)])
Item = TypeVar("Item")
MAX_PAGE = 500
UNITS_PER_PAGE = 50     # the units browser's page: 50 rows of 5 images each load in well under a second


class Page(BaseModel, Generic[Item]):
    total: int       # items in all pages
    offset: int
    limit: int
    items: list[Item]


class RunOut(BaseModel):
    id: int
    name: str
    model_kind: str
    labels_kind: str | None
    layers: int
    created_at: str


class LayerOut(BaseModel):
    name: str
    num_units: int
    input_size: int
    rf_size: float
    rf_radius: float


class UnitSummaryOut(BaseModel):
    id: int
    layer: str
    index: int
    blind: bool            # true: you have not answered this unit yet, so its results are hidden (null)
    complete: bool | None
    answer: str | None
    label: str | None
    precision: float | None
    agreement: float | None
    auto_category: str | None
    auto_precision: float | None
    auto_iou: float | None
    characteristic: bool | None
    url: str
    top_image_urls: list[str]


class ImageOut(BaseModel):
    id: int
    rank: int              # from 1 (the strongest), as the pages number images
    activation: float
    frame: int
    url: str
    clip_url: str | None


class VerdictOut(BaseModel):
    answer: str | None
    category: str | None
    is_detector: bool
    precision: float
    agreement: float | None
    annotators: int
    settled: bool
    characteristic: bool
    image_contains: list[bool]


class AutomaticOut(BaseModel):
    category: str | None
    precision: float | None
    iou: float | None
    netdissect_category: str | None
    netdissect_iou: float | None


class HistogramOut(BaseModel):
    counts: list[int]      # pool images per bin of the unit's spatial maximum
    edges: list[float]     # len(counts) + 1


class QuantileSamplesOut(BaseModel):
    quantile: float        # e.g. 0.9: images near the 90th percentile of the unit's spatial maxima
    images: list[ImageOut]


class SimilarOut(BaseModel):
    layer: str
    unit: int
    r: float               # Pearson r of the two units' spatial maxima over the pool
    label: str | None      # its automatic label (null where you may not see it yet)


class UnitOut(BaseModel):
    id: int
    run: int
    layer: str
    index: int
    blind: bool                             # true: you have not answered this unit yet: verdict and automatic are null
    images: list[ImageOut]
    histogram: HistogramOut | None          # None: the run's units were extracted before histograms were saved
    samples: list[QuantileSamplesOut]
    verdict: VerdictOut | None
    automatic: AutomaticOut | None
    helps_predict: list[dict] = []     # ``ambient ablate --each-unit``: sound labels, largest drop first
    visualization_url: str | None = None   # ``ambient visualize``: a PNG optimised to excite the unit
    similar: list[SimilarOut] = []     # the run's units whose pool maxima correlate most with this one's
    previous: int | None
    next: int | None


class ClusterOut(BaseModel):
    index: int
    name: str                        # "Cluster 3", "Bit 7"
    title: str                       # with what it is: "Cluster 3: traffic 62%, crowd 20%"
    description: str | None          # what the data says at publish: the world's true sources, else its clips' videos
    given_name: str | None           # an admin's name for it
    size: int
    share: float
    texture: list[float]             # the centroid's (or the bit-on frames' mean) 502 texture statistics
    contrast: list[float] | None     # binary codes: the mean texture with the bit off
    sources: dict[str, int]
    closest_frame_ids: list[int]
    depends_on: list[dict] = []        # ``ambient ablate --each-unit``: units, largest drop first
    members_url: str


class FrameSummaryOut(BaseModel):
    id: int
    url: str
    image_url: str
    clip_url: str | None


class FrameOut(FrameSummaryOut):
    dataset: int
    video: str | None
    frame_index: int
    time: float
    split: str
    silent: bool
    texture: list[float] | None


Bound = Annotated[Share | None, BlankIsNone, Query(description="0 to 1; blank: no bound")]


def unit_filters(label: str = Query("", max_length=200), min_precision: Bound = None, min_iou: Bound = None,
                 min_agreement: Bound = None,
                 characteristic: Annotated[bool | None, BlankIsNone, Query(description="blank: any")] = None,
                 layer: str = Query("", max_length=200),
                 sort: Annotated[Annotated[str, Field(max_length=30)] | None, BlankIsNone,
                                 Query(description=f"one of {', '.join(SORTS)}")] = None,
                 detectors_only: Annotated[bool | None, BlankIsNone, Query()] = None) -> UnitFilters:
    return UnitFilters(label, min_precision, min_iou, min_agreement, characteristic, layer, sort or "unit",
                       bool(detectors_only))


def shown_units(user: Annotator = Depends(current_user), db: Session = Depends(get_db),
                settings: Settings = Depends(get_settings)) -> Visibility:
    """Whose results this account may see: annotators are blind to a unit until they answer it (backend/app/campaign.py)."""
    return visibility(db, user, settings.undo_minutes)


def _offset(offset: int = Query(0, ge=0, le=10**9)) -> int:
    return offset


def _limit(limit: int = Query(100, ge=1, le=MAX_PAGE)) -> int:
    return limit


# --- Pages

@pages.get("/runs")
def runs_page(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    return render(request, "runs.html", user=user, runs=run_records(db))


@pages.get("/runs/{run_id}/units")
def units_browser(run_id: int, request: Request, filters: UnitFilters = Depends(unit_filters),
                  offset: int = Depends(_offset),
                  user: Annotator = Depends(current_user), shown: Visibility = Depends(shown_units),
                  db: Session = Depends(get_db)):
    run = get_run(db, run_id)
    units = unit_summaries(default_report(db, run), shown)
    layers = db.scalars(select(Layer.name).where(Layer.run_id == run_id).order_by(Layer.name)).all()
    matching = browse_units(units, filters)
    return render(request, "units_browser.html", user=user, run=run, units=matching[offset:offset + UNITS_PER_PAGE],
                  pages=pages_of(request, offset, UNITS_PER_PAGE, len(matching)),
                  total=len(units), filters=filters, sorts=SORTS, layers=layers,
                  blind_units=sum(u.blind for u in units))


@pages.get("/runs/{run_id}/units/{layer}/{index}")
def unit_view(run_id: int, layer: str, index: int, request: Request, user: Annotator = Depends(current_user),
              shown: Visibility = Depends(shown_units), db: Session = Depends(get_db)):
    page = unit_page(db, run_id, layer, index, shown)
    figure = histogram_figure(page)
    return render(request, "unit_view.html", user=user, page=page,
                  histogram=figure_html(figure, displayModeBar=False) if figure is not None else None)


@pages.get("/runs/{run_id}/compare")
def compare_view(run_id: int, request: Request, user: Annotator = Depends(current_user),
                 shown: Visibility = Depends(shown_units), db: Session = Depends(get_db)):
    """The run's units matched to another run's (``ambient compare``), one section per comparison."""
    run, comparisons = run_comparisons(db, run_id, shown)
    return render(request, "compare.html", user=user, run=run, comparisons=comparisons)


@media.get("/samples/{sample_id}", response_class=Response,
           responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "Not modified"}})
def sample_image(sample_id: int, request: Request, db: Session = Depends(get_db)) -> Response:
    """One of a unit's masked lower-quantile samples (JPEG), cached by the browser and revalidated by ETag."""
    jpeg = db.scalar(select(UnitSample.masked_jpeg).where(UnitSample.id == sample_id))
    if jpeg is None:
        raise HTTPException(404, f"There is no sample {sample_id}.")
    return jpeg_response(jpeg, request)


# --- The JSON API

@api.get("/runs", response_model=Page[RunOut])
def api_runs(offset: int = Depends(_offset), limit: int = Depends(_limit), db: Session = Depends(get_db)):
    """Every run: its network, its labels, how many layers have units."""
    return page_of(run_records(db), offset, limit)


@api.get("/runs/{run_id}/layers", response_model=Page[LayerOut])
def api_layers(run_id: int, offset: int = Depends(_offset), limit: int = Depends(_limit),
               db: Session = Depends(get_db)):
    """The run's layers with units: how many, the input size and the receptive field the masks use."""
    return page_of(layer_records(db, run_id), offset, limit)


@api.get("/runs/{run_id}/units", response_model=Page[UnitSummaryOut])
def api_units(run_id: int, filters: UnitFilters = Depends(unit_filters), offset: int = Depends(_offset),
              limit: int = Depends(_limit), shown: Visibility = Depends(shown_units), db: Session = Depends(get_db)):
    """The run's units, filtered and sorted as the units browser does: labels, precision, IoU, agreement.
    An annotator's units they have not answered yet are blind (their results null) unless an admin opened the results."""
    units = browse_units(unit_summaries(default_report(db, get_run(db, run_id)), shown), filters)
    return page_of([summary_record(run_id, u) for u in units], offset, limit)


@api.get("/runs/{run_id}/units/{layer}/{index}", response_model=UnitOut)
def api_unit(run_id: int, layer: str, index: int, shown: Visibility = Depends(shown_units),
             db: Session = Depends(get_db)):
    """One unit: its top images' and clips' URLs, human verdict (once complete), automatic labels, neighbours.
    Blind (verdict and automatic null) for an annotator who has not answered it yet, unless an admin opened the results."""
    return unit_record(unit_page(db, run_id, layer, index, shown))


@api.get("/runs/{run_id}/clusters", response_model=Page[ClusterOut])
def api_clusters(run_id: int, offset: int = Depends(_offset), limit: int = Depends(_limit),
                 db: Session = Depends(get_db)):
    """The run's sound clusters (or code bits) with their centroid texture statistics."""
    return page_of(cluster_records(db, run_id), offset, limit)


@api.get("/runs/{run_id}/clusters/{index}/members", response_model=Page[FrameSummaryOut])
def api_cluster_members(run_id: int, index: int, offset: int = Depends(_offset), limit: int = Depends(_limit),
                        db: Session = Depends(get_db)):
    """The frames of one sound cluster (or with one code bit on)."""
    return cluster_members(db, run_id, index, offset, limit)


@api.get("/frames/{frame_id}", response_model=FrameOut)
def api_frame(frame_id: int, db: Session = Depends(get_db)):
    """One frame: its video, time, split, image and clip URLs, and its clip's 502 texture statistics."""
    return frame_record(db, frame_id)


# Emergence, ablation and localisation name each detector's or sound's category: admins only, as the results pages (annotators are blind).
@api.get("/runs/{run_id}/emergence", response_model=dict, dependencies=[Depends(admin_user)])
def api_emergence(run_id: int, db: Session = Depends(get_db)):
    """When the detectors emerged (``ambient dissect --checkpoints``): per kept training step, the held-out
    accuracy and the detectors (total, sounding, silent, per category); each final detector's first step."""
    run = get_run(db, run_id)
    if run.emergence is None:
        raise TaskError(f"Run {run.name} has no emergence results: train with --keep-checkpoints N, then run "
                        f"`ambient dissect RUN_DIR --truth --checkpoints`.", 404)
    return run.emergence


@api.get("/runs/{run_id}/ablation", response_model=dict, dependencies=[Depends(admin_user)])
def api_ablation(run_id: int, db: Session = Depends(get_db)):
    """Units switched off (``ambient ablate``): the intact network's accuracy and, per ablated set, its
    accuracy, per-label accuracy, the random units' control and, with the world's truth, the drops."""
    run = get_run(db, run_id)
    if run.ablation is None:
        raise TaskError(f"Run {run.name} has no ablation results: run `ambient ablate RUN_DIR`.", 404)
    return run.ablation


@api.get("/runs/{run_id}/localization", response_model=dict, dependencies=[Depends(admin_user)])
def api_localization(run_id: int, db: Session = Depends(get_db)):
    """Where the sound comes from (``ambient localize``): the heatmaps of the true sound label against the
    world's truth (cIoU, AUC, pointing game) overall and per category, the baselines (centre prior, untrained
    network, scene control), the negatives (sound off screen, only silent objects in view), the heatmap methods
    compared, and a few example frames (PNG data URIs: heatmap beside the truth's outline)."""
    run = get_run(db, run_id)
    if run.localization is None:
        raise TaskError(f"Run {run.name} has no localisation results: run `ambient localize RUN_DIR` on a run "
                        f"trained on a generated world's data.", 404)
    return run.localization
