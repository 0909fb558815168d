"""The sound-cluster browser: each run's clusters (or code bits) with their closest frames, playable
clips, texture charts and cochleagrams; and a frame's texture against its cluster's."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.clusters import BROWSABLE_KINDS, DatasetSounds, cochleagram_png, dataset_sounds, texture_figure
from backend.app.deps import current_user, get_db, render
from backend.db.models import Annotator, Dataset, Frame, Run

router = APIRouter(include_in_schema=False, dependencies=[Depends(current_user)])
CACHE = {"Cache-Control": "private, max-age=3600"}


def _embed(figure) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, config={"displayModeBar": False})


def _run_sounds(db: Session, run_id: int) -> tuple[Run, Dataset, DatasetSounds]:
    run = db.get(Run, run_id)
    if run is None:
        raise HTTPException(404, f"There is no run {run_id}.")
    dataset = db.get(Dataset, run.dataset_id) if run.dataset_id else None
    if dataset is None or run.labels_kind not in BROWSABLE_KINDS:
        raise HTTPException(404, f"Run {run.name} has no cluster or binary sound labels to browse.")
    try:
        return run, dataset, dataset_sounds(dataset.data_dir, run.labels_kind)
    except FileNotFoundError as error:
        raise HTTPException(404, str(error)) from None


def _frame_ids(db: Session, dataset_id: int) -> dict[int, int]:
    return dict(db.execute(select(Frame.row, Frame.id).where(Frame.dataset_id == dataset_id)).all())


def _frame_file(db: Session, frame_id: int, column) -> Path:
    row = db.execute(select(Dataset.data_dir, column).join(Frame, Frame.dataset_id == Dataset.id)
                     .where(Frame.id == frame_id)).one_or_none()
    if row is None:
        raise HTTPException(404, f"There is no frame {frame_id}.")
    data_dir = Path(row[0]).resolve()
    path = (data_dir / row[1]).resolve()
    if not path.is_relative_to(data_dir) or not path.is_file():
        raise HTTPException(404, f"The file of frame {frame_id} is missing from {data_dir}.")
    return path


@router.get("/clusters")
def runs_with_labels(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    runs = db.scalars(select(Run).where(Run.labels_kind.in_(BROWSABLE_KINDS), Run.dataset_id.is_not(None))
                      .order_by(Run.id)).all()
    return render(request, "clusters.html", user=user, runs=runs)


@router.get("/runs/{run_id}/clusters")
def run_clusters(run_id: int, request: Request, user: Annotator = Depends(current_user),
                 db: Session = Depends(get_db)):
    run, dataset, sounds = _run_sounds(db, run_id)
    contrast = "bit off" if sounds.kind == "binary" else ""
    charts = {g.index: _embed(texture_figure(g.texture, "bit on" if contrast else "centroid", g.contrast, contrast))
              for g in sounds.groups}
    return render(request, "clusters_run.html", user=user, run=run, sounds=sounds, charts=charts,
                  frame_ids=_frame_ids(db, dataset.id))


@router.get("/runs/{run_id}/clusters/{index}/cochleagram.png", response_class=Response)
def cluster_cochleagram(run_id: int, index: int, db: Session = Depends(get_db)) -> Response:
    """The cochleagram of the clip closest to the group's centroid."""
    _, dataset, sounds = _run_sounds(db, run_id)
    if not 0 <= index < len(sounds.groups) or not sounds.groups[index].closest_rows:
        raise HTTPException(404, f"Group {index} of run {run_id} has no test frame.")
    frame_id = _frame_ids(db, dataset.id)[sounds.groups[index].closest_rows[0]]
    return Response(cochleagram_png(_frame_file(db, frame_id, Frame.clip_path)), media_type="image/png",
                    headers=CACHE)


@router.get("/runs/{run_id}/frames/{frame_id}")
def frame_page(run_id: int, frame_id: int, request: Request, user: Annotator = Depends(current_user),
               db: Session = Depends(get_db)):
    run, dataset, sounds = _run_sounds(db, run_id)
    frame = db.get(Frame, frame_id)
    if frame is None or frame.dataset_id != dataset.id:
        raise HTTPException(404, f"Run {run.name}'s dataset has no frame {frame_id}.")
    texture = sounds.textures[frame.row]
    if sounds.kind == "cluster":
        groups = [sounds.groups[int(sounds.assignment[frame.row])]]
    else:
        groups = [g for g in sounds.groups if sounds.assignment[frame.row, g.index]]
    charts = [(g, _embed(texture_figure(texture, "this clip", g.texture, g.name))) for g in groups]
    return render(request, "frame.html", user=user, run=run, frame=frame, record=sounds.records[frame.row],
                  charts=charts, kind=sounds.kind)


@router.get("/frames/{frame_id}/image", response_class=FileResponse)
def frame_image(frame_id: int, db: Session = Depends(get_db)) -> FileResponse:
    return FileResponse(_frame_file(db, frame_id, Frame.image_path), headers=CACHE)


@router.get("/frames/{frame_id}/clip", response_class=FileResponse)
def frame_clip(frame_id: int, db: Session = Depends(get_db)) -> FileResponse:
    """The frame's 3.75 s clip (byte ranges supported, for seeking)."""
    return FileResponse(_frame_file(db, frame_id, Frame.clip_path), headers=CACHE)


@router.get("/frames/{frame_id}/cochleagram.png", response_class=Response)
def frame_cochleagram(frame_id: int, db: Session = Depends(get_db)) -> Response:
    return Response(cochleagram_png(_frame_file(db, frame_id, Frame.clip_path)), media_type="image/png",
                    headers=CACHE)
