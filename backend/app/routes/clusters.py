"""The sound-cluster browser: each run's clusters (or code bits) with their closest frames, playable
clips, texture charts and cochleagrams; and a frame's texture against its cluster's."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.clusters import (CLUSTERS_PER_PAGE, NotFound, cluster_url, cochleagram_png, frame_groups,
                                  frame_texture, name_cluster, run_groups, runs_with_clusters, texture_figure)
from backend.app.deps import admin_user, check_csrf, current_user, figure_html, flash, get_db, pages_of, render
from backend.app.media_files import dataset_file
from backend.db.models import Annotator, Dataset, Frame

router = APIRouter(include_in_schema=False, dependencies=[Depends(current_user)])
CACHE = {"Cache-Control": "private, max-age=3600"}
# Each cluster is a texture chart, a cochleagram and a row of frames with clips: five make a page.


def _embed(figure) -> str:
    return figure_html(figure, displayModeBar=False)


def _found(call, *args):
    try:
        return call(*args)
    except NotFound as error:
        raise HTTPException(404, str(error)) from None


def _frame_file(db: Session, frame_id: int, column) -> Path:
    row = db.execute(select(Dataset.data_dir, column).join(Frame, Frame.dataset_id == Dataset.id)
                     .where(Frame.id == frame_id)).one_or_none()
    if row is None:
        raise HTTPException(404, f"There is no frame {frame_id}.")
    path = dataset_file(row[0], row[1])
    if path is None:
        raise HTTPException(404, f"The file of frame {frame_id} is missing.")
    return path


@router.get("/clusters")
def runs_with_labels(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    return render(request, "clusters.html", user=user, runs=runs_with_clusters(db))


@router.get("/runs/{run_id}/clusters")
def run_clusters(run_id: int, request: Request, offset: int = Query(0, ge=0, le=10**9),
                 user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    run, groups = _found(run_groups, db, run_id)
    shown = groups[offset:offset + CLUSTERS_PER_PAGE]
    binary = run.labels_kind == "binary"
    charts = {g.index: _embed(texture_figure(g.texture, "bit on" if binary else "centroid", g.contrast,
                                             "bit off" if binary else "")) for g in shown}
    return render(request, "clusters_run.html", user=user, run=run, groups=shown, binary=binary, charts=charts,
                  pages=pages_of(request, offset, CLUSTERS_PER_PAGE, len(groups)))


@router.post("/runs/{run_id}/clusters/{index}/name", dependencies=[Depends(check_csrf)])
def rename_cluster(run_id: int, index: int, request: Request, name: str = Form("", max_length=1000),
                   user: Annotator = Depends(admin_user), db: Session = Depends(get_db)):
    cluster = _found(name_cluster, db, run_id, index, name)
    flash(request, f"{cluster.name} is called {cluster.given_name!r}." if cluster.given_name
          else f"{cluster.name} has no given name: what the data says shows.")
    return RedirectResponse(cluster_url(run_id, index), status_code=303)


@router.get("/runs/{run_id}/clusters/{index}/cochleagram.png", response_class=Response)
def cluster_cochleagram(run_id: int, index: int, db: Session = Depends(get_db)) -> Response:
    """The cochleagram of the clip closest to the group's centroid."""
    _, groups = _found(run_groups, db, run_id)
    group = next((g for g in groups if g.index == index), None)
    if group is None or not group.closest_frame_ids:
        raise HTTPException(404, f"Group {index} of run {run_id} has no test frame.")
    return Response(cochleagram_png(_frame_file(db, group.closest_frame_ids[0], Frame.clip_path)),
                    media_type="image/png", headers=CACHE)


@router.get("/runs/{run_id}/frames/{frame_id}")
def frame_page(run_id: int, frame_id: int, request: Request, user: Annotator = Depends(current_user),
               db: Session = Depends(get_db)):
    run, frame, groups = _found(frame_groups, db, run_id, frame_id)
    texture = frame_texture(frame)
    charts = [(g, _embed(texture_figure(texture, "this clip", g.texture, g.name))) for g in groups] \
        if texture is not None else []
    return render(request, "frame.html", user=user, run=run, frame=frame, charts=charts,
                  binary=run.labels_kind == "binary")


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
