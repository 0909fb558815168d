"""Listen to an image (every account): upload an image or pick a frame of the pool, see the sound the
run predicts, its firing units and heatmap, hear the top clusters' clips and a synthesised sound; the
same prediction as JSON at POST /api/v1/runs/{run_id}/predict (an API token works)."""
from __future__ import annotations

import base64

import anyio
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.app.campaign import visibility
from backend.app.deps import check_csrf, current_user, figure_html, get_db, render
from backend.app.errors import TaskError
from backend.app.listen import (Listened, Listening, checked_file_name, labels_figure, listen, pool_frame, pool_frames,
                                start_synthesis, synthesis_job)
from backend.db.models import Annotator, Run

pages = APIRouter(include_in_schema=False, dependencies=[Depends(current_user)])
api = APIRouter(prefix="/api/v1", tags=["listen"], dependencies=[Depends(current_user)])


class UnitOut(BaseModel):
    layer: str
    unit: int               # its 0-based channel in the layer
    activation: float       # the spatial maximum of its map on this image
    relative: float | None  # ... over its top-quantile activation on the pool (None: the units file has none)
    label: str | None       # the people's verdict, else the automatic label (None: none, or hidden from you)
    url: str | None         # its unit page, where the run's layer is published


class LabelOut(BaseModel):
    label: str
    probability: float


class ClipOut(BaseModel):
    frame: int
    clip_url: str
    image_url: str


class ClusterOut(BaseModel):
    label: str
    probability: float
    clips: list[ClipOut]


class PredictionOut(BaseModel):
    source: str
    labels: list[LabelOut]        # best first; sound clusters (or bits), or a classifier's classes
    units: list[UnitOut]          # firing most first
    target: str | None            # what the heatmap explains (None: where the layer fires)
    heatmap: str                  # the heatmap over the network's input, as a data: URL of a PNG
    texture: list[float] | None   # the predicted 502-d sound texture
    texture_source: str
    clusters: list[ClusterOut]    # the top sound clusters with real clips
    prediction: str | None        # pass to POST /listen/synthesis to hear it


class SynthesisIn(BaseModel):
    prediction: str


def _listening(request: Request) -> Listening:
    return request.app.state.listening


def _heatmap_url(listened: Listened) -> str:
    return "data:image/png;base64," + base64.b64encode(listened.heatmap_png).decode()


def _record(listened: Listened) -> dict:
    return {"source": listened.source, "labels": listened.labels, "units": listened.units, "target": listened.target,
            "heatmap": _heatmap_url(listened), "texture": listened.texture, "texture_source": listened.texture_source,
            "clusters": listened.clusters, "prediction": listened.prediction}


async def _read_upload(request: Request, image: UploadFile) -> tuple[bytes, str]:
    """The upload's bytes (in memory: nothing is written to disk) and checked name, counted against the account."""
    name = checked_file_name(image.filename)
    limit = request.app.state.settings.predict_max_upload_bytes
    try:
        data = await image.read(limit + 1)
    finally:
        await image.close()
    if len(data) > limit:
        raise TaskError(f"{name}: the file is over the {limit // 2**20} MiB upload limit.", 413)
    return data, name


async def _predict(request: Request, user: Annotator, run_id: int, read) -> Listened:
    """Count the request against the account, get the image (``read``: a coroutine function) and predict in a
    worker thread, a bounded number at a time: the event loop keeps answering everyone else."""
    listening = _listening(request)
    listening.guard.request(user.id)
    data, source = await read()
    listening.guard.upload(user.id, len(data))
    user_id = user.id

    def work() -> Listened:
        with request.app.state.sessions() as db:
            account = db.get(Annotator, user_id)
            shown = visibility(db, account, request.app.state.settings.undo_minutes)
            return listen(listening, db, run_id, user_id, shown, data, source)

    return await anyio.to_thread.run_sync(work, limiter=listening.limiter)


def _pool_reader(request: Request, run_id: int, frame: int):
    async def read() -> tuple[bytes, str]:
        def load() -> tuple[bytes, str]:
            with request.app.state.sessions() as db:
                run = db.get(Run, run_id)
                if run is None:
                    raise TaskError(f"There is no run {run_id}.", 404)
                return pool_frame(db, run, frame)
        return await anyio.to_thread.run_sync(load)
    return read


def _page(request: Request, user: Annotator, run_id: int, listened: Listened | None):
    with request.app.state.sessions() as db:
        run = db.get(Run, run_id)
        if run is None:
            raise TaskError(f"There is no run {run_id}.", 404)
        frames = pool_frames(db, run)
        return render(request, "listen.html", user=user, run=run, frames=frames, listened=listened,
                      chart=figure_html(labels_figure(listened), displayModeBar=False)
                      if listened and listened.labels else None,
                      heatmap=_heatmap_url(listened) if listened else None)


@pages.get("/listen")
def listen_runs(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    return render(request, "listen_runs.html", user=user, runs=db.scalars(select(Run).order_by(Run.id)).all())


@pages.get("/runs/{run_id}/listen")
async def listen_page(run_id: int, request: Request, frame: int | None = Query(None, ge=1, le=2**31),
                      user: Annotator = Depends(current_user)):
    """The page; with ?frame=ID, the prediction for that frame of the run's pool."""
    listened = None if frame is None else await _predict(request, user, run_id, _pool_reader(request, run_id, frame))
    return await anyio.to_thread.run_sync(_page, request, user, run_id, listened)


@pages.post("/runs/{run_id}/listen", dependencies=[Depends(check_csrf)])
async def listen_upload(run_id: int, request: Request, image: UploadFile = File(...),
                        user: Annotator = Depends(current_user)):
    listened = await _predict(request, user, run_id, lambda: _read_upload(request, image))
    return await anyio.to_thread.run_sync(_page, request, user, run_id, listened)


@api.post("/runs/{run_id}/predict", response_model=PredictionOut, dependencies=[Depends(check_csrf)])
async def api_predict(run_id: int, request: Request, image: UploadFile = File(...),
                      user: Annotator = Depends(current_user)):
    """The run's prediction for an uploaded image (multipart field `image`)."""
    return _record(await _predict(request, user, run_id, lambda: _read_upload(request, image)))


@pages.post("/listen/synthesis", dependencies=[Depends(check_csrf)])
def synthesis_start(body: SynthesisIn, request: Request, user: Annotator = Depends(current_user)) -> dict:
    """Synthesise a prediction's sound in the background; poll GET /listen/synthesis/{id} for progress."""
    return start_synthesis(_listening(request), user.id, body.prediction).record()


@pages.get("/listen/synthesis/{job_id}")
def synthesis_progress(job_id: str, request: Request, user: Annotator = Depends(current_user)) -> dict:
    return synthesis_job(_listening(request), user.id, job_id).record()


@pages.get("/listen/synthesis/{job_id}/audio.wav", response_class=Response)
def synthesis_audio(job_id: str, request: Request, user: Annotator = Depends(current_user)) -> Response:
    job = synthesis_job(_listening(request), user.id, job_id)
    if job.wav is None:
        raise TaskError(f"Synthesis {job_id[:40]} is {job.state}, not done.", 409)
    return Response(job.wav, media_type="audio/wav", headers={"Cache-Control": "private, max-age=3600"})
