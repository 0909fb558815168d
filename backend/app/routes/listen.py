"""Listen to an image (every account): upload an image or pick a frame of the pool, see the sound the
run predicts, its firing units and heatmap, hear the top clusters' clips and a synthesised sound; the
same prediction as JSON at POST /api/v1/runs/{run_id}/predict (an API token works).

Every prediction is a POST: a GET (which another site can make a browser send) shows the page and spends
nothing. The upload routes take no File parameter, which FastAPI would parse before any dependency ran:
the routers' login check comes first, then upload_form parses the body, in memory."""
from __future__ import annotations

import base64
from contextlib import aclosing

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from backend.app.campaign import visibility
from backend.app.deps import check_csrf, current_user, figure_html, get_db, render
from backend.app.errors import TaskError
from backend.app.listen import (Listened, Listening, checked_file_name, labels_figure, listen, pool_frame, pool_frames,
                                start_synthesis)
from backend.app.listen_limits import job_record, synthesis_audio, synthesis_job
from backend.db.models import Annotator, Run

# The CSRF token and `frame` are read (an upload's file is counted apart: one); a form may carry a few more, which
# are ignored, so that a form without the right token is a 403 whatever else it holds.
FORM_FIELDS = 16
FIELD_BYTES = 4096             # a form field's value, at most
# The OpenAPI description of the body upload_form reads (FastAPI describes only parameters it parses itself).
IMAGE_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"], "properties": {"image": {"type": "string", "format": "binary"}}}}}}}

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


def _png_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _heatmap_url(listened: Listened) -> str:
    return _png_url(listened.heatmap_png)


def _record(listened: Listened) -> dict:
    return {"source": listened.source, "labels": listened.labels, "units": listened.units, "target": listened.target,
            "heatmap": _heatmap_url(listened), "texture": listened.texture, "texture_source": listened.texture_source,
            "clusters": listened.clusters, "prediction": listened.prediction}


class _InMemoryParts(MultiPartParser):
    """Starlette's multipart parser, keeping a file part in memory up to ``spool_max_size`` bytes (by default it
    writes one over 1 MiB to a temporary file)."""

    def __init__(self, *args, spool_max_size: int, **options):
        super().__init__(*args, **options)
        self.spool_max_size = spool_max_size


async def upload_form(request: Request) -> FormData:
    """The upload routes' form: one file and a few short fields, parsed only after the login check (the routers'
    current_user runs before the routes' dependencies) and kept in memory; BodyLimit (backend/app/main.py) has
    bounded the body before a byte of it is read. Left on request.state.form for check_csrf."""
    settings = request.app.state.settings
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("multipart/form-data"):
            async with aclosing(request.stream()) as stream:
                form = await _InMemoryParts(request.headers, stream, max_files=1, max_fields=FORM_FIELDS,
                                            max_part_size=FIELD_BYTES,
                                            spool_max_size=settings.predict_max_upload_bytes + 2**20).parse()
        elif content_type.startswith("application/x-www-form-urlencoded"):
            form = await request.form(max_files=0, max_fields=FORM_FIELDS, max_part_size=FIELD_BYTES)
        else:
            raise TaskError("Send the image as a multipart/form-data body, in the field `image`.", 415)
    except MultiPartException as error:
        raise TaskError(f"The form cannot be read: {error.message}", 400) from None
    request.state.form = form
    return form


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


async def _predict(request: Request, user: Annotator, run_id: int, read, frame_id: int | None = None) -> Listened:
    """Count the request against the account, get the image (``read``: a coroutine function; ``frame_id``: the
    pool frame it reads) and predict in a worker thread, a bounded number at a time: the event loop keeps
    answering everyone else."""
    listening = _listening(request)
    user_id = user.id
    await anyio.to_thread.run_sync(listening.guard.request, user_id)
    data, source = await read()
    await anyio.to_thread.run_sync(listening.guard.upload, user_id, len(data))

    def work() -> Listened:
        with listening.slots.held(), request.app.state.sessions() as db:
            account = db.get(Annotator, user_id)
            shown = visibility(db, account, request.app.state.settings.undo_minutes)
            return listen(listening, db, run_id, user_id, shown, data, source, frame_id)

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
                      heatmap=_heatmap_url(listened) if listened else None,
                      truth=_png_url(listened.truth_png) if listened and listened.truth_png else None)


@pages.get("/listen")
def listen_runs(request: Request, user: Annotator = Depends(current_user), db: Session = Depends(get_db)):
    return render(request, "listen_runs.html", user=user, runs=db.scalars(select(Run).order_by(Run.id)).all())


@pages.get("/runs/{run_id}/listen")
async def listen_page(run_id: int, request: Request, user: Annotator = Depends(current_user)):
    """The page: the upload form and the pool's frames to pick (a POST each; a GET predicts nothing)."""
    return await anyio.to_thread.run_sync(_page, request, user, run_id, None)


def _pool_frame_id(value) -> int:
    if not isinstance(value, str) or not value.isdigit() or not 1 <= int(value) <= 2**31:
        raise TaskError(f"frame: {str(value)[:40]!r} is not a frame's id.", 422)
    return int(value)


@pages.post("/runs/{run_id}/listen", dependencies=[Depends(upload_form), Depends(check_csrf)])
async def listen_upload(run_id: int, request: Request, form: FormData = Depends(upload_form),
                        user: Annotator = Depends(current_user)):
    """The prediction for an uploaded image (multipart field `image`) or a frame of the run's pool (field `frame`)."""
    image, frame_id = form.get("image"), None
    if isinstance(image, UploadFile):
        async def read() -> tuple[bytes, str]:
            return await _read_upload(request, image)
    elif "frame" in form:
        frame_id = _pool_frame_id(form.get("frame"))
        read = _pool_reader(request, run_id, frame_id)
    else:
        raise TaskError("Send an image (field `image`) or pick a frame of the pool (field `frame`).", 422)
    listened = await _predict(request, user, run_id, read, frame_id)
    return await anyio.to_thread.run_sync(_page, request, user, run_id, listened)


@api.post("/runs/{run_id}/predict", response_model=PredictionOut, openapi_extra=IMAGE_BODY,
          dependencies=[Depends(upload_form), Depends(check_csrf)])
async def api_predict(run_id: int, request: Request, form: FormData = Depends(upload_form),
                      user: Annotator = Depends(current_user)):
    """The run's prediction for an uploaded image (multipart field `image`)."""
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise TaskError("Send the image as a file in the multipart field `image`.", 422)
    return _record(await _predict(request, user, run_id, lambda: _read_upload(request, image)))


@pages.post("/listen/synthesis", dependencies=[Depends(check_csrf)])
def synthesis_start(body: SynthesisIn, request: Request, user: Annotator = Depends(current_user)) -> dict:
    """Synthesise a prediction's sound in the background; poll GET /listen/synthesis/{id} for progress."""
    return start_synthesis(_listening(request), user.id, body.prediction)


@pages.get("/listen/synthesis/{job_id}")
def synthesis_progress(job_id: str, request: Request, user: Annotator = Depends(current_user)) -> dict:
    return job_record(synthesis_job(request.app.state.sessions, user.id, job_id))


@pages.get("/listen/synthesis/{job_id}/audio.wav", response_class=Response)
def synthesis_audio_file(job_id: str, request: Request, user: Annotator = Depends(current_user)) -> Response:
    return Response(synthesis_audio(request.app.state.sessions, user.id, job_id), media_type="audio/wav",
                    headers={"Cache-Control": "private, max-age=3600"})
